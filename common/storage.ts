// Object storage (MinIO or any S3): the input, the output, the durable job record and the
// idempotency claims. The S3 clients stay inside: callers get the operations they need,
// and "not found" and "precondition failed" are recognised here only. Object requests go
// through SignedS3 (s3http.ts, a job's hot path); bucket-level calls and listings through the SDK.
import {
  CreateBucketCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutBucketLifecycleConfigurationCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import type { StorageConfig } from './config.js';
import { SignedS3 } from './s3http.js';

export function createS3(config: StorageConfig): S3Client {
  return new S3Client({
    endpoint: config.S3_ENDPOINT,
    region: config.S3_REGION,
    forcePathStyle: true, // MinIO serves buckets as paths, not subdomains
    credentials: { accessKeyId: config.S3_ACCESS_KEY, secretAccessKey: config.S3_SECRET_KEY },
    maxAttempts: 2,
  });
}

/** Where a job's objects live: everything of a job is under jobs/<id>/, and nothing else is. */
export const JOBS_PREFIX = 'jobs/';
export const jobKeys = (id: string) => ({
  input: `${JOBS_PREFIX}${id}/input.png`,
  output: `${JOBS_PREFIX}${id}/output.png`,
  record: `${JOBS_PREFIX}${id}/job.json`,
  /** Every webhook delivery attempt of the job (common/deliveries.ts). */
  webhooks: `${JOBS_PREFIX}${id}/webhooks.json`,
  /** The latest preview of a running job (a small WebP), deleted when it ends. */
  preview: `${JOBS_PREFIX}${id}/preview.webp`,
});

/** The job id and the kind of object a key of the bucket names, if it is a job's. */
export function jobObjectOf(key: string): { id: string; kind: keyof ReturnType<typeof jobKeys> } | undefined {
  const id = /^jobs\/([^/]+)\//.exec(key)?.[1];
  if (!id) return undefined;
  const kind = (Object.entries(jobKeys(id)) as [keyof ReturnType<typeof jobKeys>, string][]).find(([, path]) => path === key)?.[0];
  return kind && { id, kind };
}

export interface StoredObject {
  body: Readable;
  etag: string | undefined;
  length: number | undefined;
}

export interface Listed {
  key: string;
  lastModified: Date;
}

export interface StoredBytes {
  bytes: Buffer;
  etag: string;
}

/** 412 for a failed If-Match/If-None-Match; MinIO answers 409 to a concurrent conditional write, 404 to If-Match on a missing key. */
const PRECONDITION_FAILED = [412, 409];
const NOT_FOUND = [404];

type Condition = { 'if-none-match': '*' } | { 'if-match': string } | Record<string, never>;

export class ObjectStore {
  private readonly s3: S3Client;
  private readonly objects: SignedS3;

  constructor(
    config: StorageConfig,
    readonly bucket = config.S3_BUCKET,
  ) {
    this.s3 = createS3(config);
    this.objects = new SignedS3(config);
  }

  async ensureBucket(): Promise<void> {
    try {
      await this.s3.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch {
      await this.s3.send(new CreateBucketCommand({ Bucket: this.bucket })).catch((error: { name?: string }) => {
        // Another process may have created it between the two calls.
        if (error.name !== 'BucketAlreadyOwnedByYou' && error.name !== 'BucketAlreadyExists') throw error;
      });
    }
  }

  /** Resolves when the bucket answers; rejects with why not. */
  async ping(signal?: AbortSignal): Promise<void> {
    await this.s3.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal });
  }

  /** Writes unconditionally; resolves with the new ETag. */
  async put(key: string, body: Uint8Array | string, contentType: string, signal?: AbortSignal): Promise<string> {
    return (await this.write(key, body, contentType, {}, signal))!;
  }

  /** Writes only if nothing is at `key`; undefined when something is. */
  putIfAbsent(key: string, body: Uint8Array | string, contentType: string, signal?: AbortSignal): Promise<string | undefined> {
    return this.write(key, body, contentType, { 'if-none-match': '*' }, signal);
  }

  /** Writes only if `key` still has `etag`; undefined when it changed (or is gone). */
  putIfMatch(key: string, body: Uint8Array | string, contentType: string, etag: string, signal?: AbortSignal): Promise<string | undefined> {
    return this.write(key, body, contentType, { 'if-match': etag }, signal);
  }

  /** The object as a stream, or undefined when the key does not exist. */
  async open(key: string, signal?: AbortSignal): Promise<StoredObject | undefined> {
    const answer = await this.objects.request('GET', this.bucket, key, { signal, expected: NOT_FOUND });
    if (answer.status === 404) {
      await answer.body.dump();
      return undefined;
    }
    return { body: answer.body, etag: SignedS3.etag(answer), length: SignedS3.contentLength(answer) };
  }

  /** The whole object with its ETag, or undefined when the key does not exist. */
  async get(key: string, signal?: AbortSignal): Promise<StoredBytes | undefined> {
    const answer = await this.objects.request('GET', this.bucket, key, { signal, expected: NOT_FOUND });
    if (answer.status === 404) {
      await answer.body.dump();
      return undefined;
    }
    return { bytes: Buffer.from(await answer.body.arrayBuffer()), etag: SignedS3.etag(answer) ?? '' };
  }

  async getBytes(key: string, signal?: AbortSignal): Promise<Buffer | undefined> {
    return (await this.get(key, signal))?.bytes;
  }

  /** Deleting a missing key succeeds, as in S3. */
  async delete(key: string, signal?: AbortSignal): Promise<void> {
    await (await this.objects.request('DELETE', this.bucket, key, { signal })).body.dump();
  }

  /** The bucket's own lifecycle rule: objects under `prefix` are deleted `days` days after they were written. */
  async expireAfter(prefix: string, days: number): Promise<void> {
    const rule = { ID: `expire ${prefix}`, Status: 'Enabled' as const, Filter: { Prefix: prefix }, Expiration: { Days: Math.ceil(days) } };
    await this.s3.send(new PutBucketLifecycleConfigurationCommand({ Bucket: this.bucket, LifecycleConfiguration: { Rules: [rule] } }));
  }

  /** Every object under `prefix`, in key order, a page at a time. */
  async *list(prefix: string, signal?: AbortSignal): AsyncGenerator<Listed> {
    let token: string | undefined;
    do {
      const page = await this.s3.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
        { abortSignal: signal },
      );
      for (const object of page.Contents ?? []) yield { key: object.Key!, lastModified: object.LastModified ?? new Date(0) };
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /**
   * One page of keys under `prefix` after `startAfter`, in key order; with a delimiter, the
   * distinct prefixes up to it instead of the keys below them (a folder listing).
   */
  async listPage(prefix: string, options: { startAfter?: string; maxKeys?: number; delimiter?: string }, signal?: AbortSignal): Promise<{ keys: string[]; prefixes: string[]; truncated: boolean }> {
    const page = await this.s3.send(
      new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, StartAfter: options.startAfter, MaxKeys: options.maxKeys, Delimiter: options.delimiter }),
      { abortSignal: signal },
    );
    return {
      keys: (page.Contents ?? []).map((object) => object.Key!),
      prefixes: (page.CommonPrefixes ?? []).map((common) => common.Prefix!),
      truncated: page.IsTruncated ?? false,
    };
  }

  close(): void {
    this.s3.destroy();
    void this.objects.close();
  }

  private async write(key: string, body: Uint8Array | string, contentType: string, condition: Condition, signal?: AbortSignal) {
    const expected = 'if-match' in condition ? [...PRECONDITION_FAILED, 404] : 'if-none-match' in condition ? PRECONDITION_FAILED : [];
    const answer = await this.objects.request('PUT', this.bucket, key, { body, headers: { 'content-type': contentType, ...condition }, signal, expected });
    await answer.body.dump();
    if (answer.status >= 300) return undefined;
    return SignedS3.etag(answer)!;
  }
}
