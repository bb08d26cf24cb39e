// Object storage (MinIO or any S3): the input, the output and the durable job record.
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadBucketCommand,
  NoSuchKey,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import type { Config } from './config.js';

export function createS3(config: Config): S3Client {
  return new S3Client({
    endpoint: config.S3_ENDPOINT,
    region: config.S3_REGION,
    forcePathStyle: true, // MinIO serves buckets as paths, not subdomains
    credentials: { accessKeyId: config.S3_ACCESS_KEY, secretAccessKey: config.S3_SECRET_KEY },
    maxAttempts: 2,
  });
}

export const jobKeys = (id: string) => ({
  input: `jobs/${id}/input.png`,
  output: `jobs/${id}/output.png`,
  record: `jobs/${id}/job.json`,
});

export interface StoredObject {
  body: Readable;
  etag: string | undefined;
  length: number | undefined;
}

export class ObjectStore {
  constructor(
    readonly s3: S3Client,
    readonly bucket: string,
  ) {}

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

  async put(key: string, body: Uint8Array | string, contentType: string, signal?: AbortSignal): Promise<string | undefined> {
    const result = await this.s3.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }),
      { abortSignal: signal },
    );
    return result.ETag;
  }

  /** The object as a stream, or undefined when the key does not exist. */
  async open(key: string, signal?: AbortSignal): Promise<StoredObject | undefined> {
    try {
      const result = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }), { abortSignal: signal });
      return { body: result.Body as Readable, etag: result.ETag, length: result.ContentLength };
    } catch (error) {
      if (error instanceof NoSuchKey) return undefined;
      throw error;
    }
  }

  async getBytes(key: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    const object = await this.open(key, signal);
    if (!object) return undefined;
    const chunks: Buffer[] = [];
    for await (const chunk of object.body) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  async putJson(key: string, value: unknown, signal?: AbortSignal): Promise<void> {
    await this.put(key, JSON.stringify(value), 'application/json', signal);
  }

  async getJson(key: string, signal?: AbortSignal): Promise<unknown> {
    const bytes = await this.getBytes(key, signal);
    return bytes === undefined ? undefined : JSON.parse(Buffer.from(bytes).toString('utf8'));
  }
}
