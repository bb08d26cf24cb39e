// Idempotency-Key claims: idempotency/<namespace>/<sha256(key)>.json = {job_id, request_hash,
// created_at}, written with If-None-Match: * so exactly one request wins a key, on any replica.
// The namespace is the deployment's topic prefix: deployments sharing a bucket never share keys.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ObjectStore } from '../common/storage.js';

const Claim = z.object({ job_id: z.string(), request_hash: z.string(), created_at: z.string() });
export type Claim = z.infer<typeof Claim>;

export const hashKey = (key: string) => createHash('sha256').update(key, 'utf8').digest('hex');

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
      if (await this.write(keyHash, claim, {}, signal)) return { won: true };
      const current = await this.read(keyHash, signal);
      if (current) return { won: false, ...current };
      // Released between our write and our read: try to win it again.
    }
    return { won: false };
  }

  /** Replaces a stale claim (its job never got a record) if nobody else did first. */
  async takeOver(keyHash: string, claim: Claim, etag: string, signal: AbortSignal): Promise<boolean> {
    return this.write(keyHash, claim, { ifMatch: etag }, signal);
  }

  async release(keyHash: string, signal: AbortSignal): Promise<void> {
    await this.store.delete(this.claimKey(keyHash), signal);
  }

  private async write(keyHash: string, claim: Claim, condition: { ifMatch?: string }, signal: AbortSignal): Promise<boolean> {
    const key = this.claimKey(keyHash);
    const body = JSON.stringify(claim);
    const etag = condition.ifMatch
      ? await this.store.putIfMatch(key, body, 'application/json', condition.ifMatch, signal)
      : await this.store.putIfAbsent(key, body, 'application/json', signal);
    return etag !== undefined;
  }

  private async read(keyHash: string, signal: AbortSignal): Promise<{ existing: Claim; etag: string } | undefined> {
    const stored = await this.store.get(this.claimKey(keyHash), signal);
    if (!stored) return undefined;
    return { existing: Claim.parse(JSON.parse(stored.bytes.toString('utf8'))), etag: stored.etag };
  }
}
