// Idempotency-Key claims: idempotency/<namespace>/<sha256(key)>.json = {job_id, request_hash,
// created_at}, written with If-None-Match: * so exactly one request wins a key, on any replica.
// The namespace is the deployment's topic prefix: deployments sharing a bucket never share keys.
import { createHash } from 'node:crypto';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { z } from 'zod';
import type { ObjectStore } from '../common/storage.js';

const Claim = z.object({ job_id: z.string(), request_hash: z.string(), created_at: z.string() });
export type Claim = z.infer<typeof Claim>;

export const hashKey = (key: string) => createHash('sha256').update(key, 'utf8').digest('hex');

const httpStatus = (error: unknown) => (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
const isPreconditionFailed = (error: unknown) => httpStatus(error) === 412 || httpStatus(error) === 409;

/** `existing` is missing only when the key kept changing hands while we looked (treat as in progress). */
export type ClaimResult = { won: true } | { won: false; existing?: Claim; etag?: string };

export class IdempotencyStore {
  constructor(
    private readonly store: ObjectStore,
    private readonly namespace: string,
  ) {}

  private claimKey(keyHash: string): string {
    return `idempotency/${this.namespace}/${keyHash}.json`;
  }

  /** Claims `keyHash` for `claim`, or reports the claim already there. */
  async claim(keyHash: string, claim: Claim, signal: AbortSignal): Promise<ClaimResult> {
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await this.write(keyHash, claim, { IfNoneMatch: '*' }, signal)) return { won: true };
      const current = await this.read(keyHash, signal);
      if (current) return { won: false, ...current };
      // Released between our write and our read: try to win it again.
    }
    return { won: false };
  }

  /** Replaces a stale claim (its job never got a record) if nobody else did first. */
  async takeOver(keyHash: string, claim: Claim, etag: string, signal: AbortSignal): Promise<boolean> {
    return this.write(keyHash, claim, { IfMatch: etag }, signal);
  }

  async release(keyHash: string, signal: AbortSignal): Promise<void> {
    await this.store.s3.send(new DeleteObjectCommand({ Bucket: this.store.bucket, Key: this.claimKey(keyHash) }), { abortSignal: signal });
  }

  private async write(keyHash: string, claim: Claim, condition: { IfNoneMatch?: string; IfMatch?: string }, signal: AbortSignal) {
    try {
      await this.store.s3.send(
        new PutObjectCommand({
          Bucket: this.store.bucket,
          Key: this.claimKey(keyHash),
          Body: JSON.stringify(claim),
          ContentType: 'application/json',
          ...condition,
        }),
        { abortSignal: signal },
      );
      return true;
    } catch (error) {
      if (isPreconditionFailed(error)) return false;
      throw error;
    }
  }

  private async read(keyHash: string, signal: AbortSignal): Promise<{ existing: Claim; etag: string } | undefined> {
    try {
      const result = await this.store.s3.send(new GetObjectCommand({ Bucket: this.store.bucket, Key: this.claimKey(keyHash) }), {
        abortSignal: signal,
      });
      const existing = Claim.parse(JSON.parse(await result.Body!.transformToString('utf8')));
      return { existing, etag: result.ETag! };
    } catch (error) {
      if (httpStatus(error) === 404) return undefined;
      throw error;
    }
  }
}
