// API keys: `i2i_<key id>_<secret>`. The record of a key (auth/keys/<id>.json in the object
// store, next to the job records) holds its tenant, name, role, limits and webhook defaults,
// and only an HMAC of the secret under a server-side pepper. Every API replica reads keys
// from the store and keeps them a few seconds, so a new or revoked key takes effect on all
// of them within seconds, without a restart.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { EventType } from './jobs.js';
import type { ObjectStore } from './storage.js';

export const Role = z.enum(['user', 'admin']);
export type Role = z.infer<typeof Role>;

export const KeyLimits = z.object({
  /** Submissions allowed per window (token bucket refilled over `per_seconds`); null: unlimited. */
  rate: z.object({ points: z.number().int().min(1), per_seconds: z.number().int().min(1) }).nullable(),
  /** Jobs of this key queued or running at once; null: unlimited. */
  concurrency: z.number().int().min(1).nullable(),
  /**
   * Compute this key may ask for per window, in megapixel-steps (the computed width x height x
   * denoising steps, over a million): a 1024x1024 job of 50 steps is 52.4. null or absent: unlimited.
   */
  cost: z.object({ megapixel_steps: z.number().positive(), per_seconds: z.number().int().min(1) }).nullable().optional(),
});
export type KeyLimits = z.infer<typeof KeyLimits>;

export const ApiKey = z.object({
  v: z.literal(1),
  id: z.string().regex(/^[A-Za-z0-9]{12}$/),
  tenant: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/),
  name: z.string().min(1).max(200),
  role: Role,
  /** HMAC-SHA256(pepper, secret), hex. */
  hash: z.string(),
  created_at: z.string(),
  revoked_at: z.string().nullable(),
  limits: KeyLimits,
  /** Webhook settings used when a submission names none. */
  webhook: z.object({ url: z.string().url(), events: z.array(EventType) }).nullable(),
});
export type ApiKey = z.infer<typeof ApiKey>;

export const TENANT = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const TOKEN = /^i2i_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** How long a replica trusts what it read of a key (a revocation reaches it within this). */
const CACHE_MS = 3000;
/** Entries of each cache (known keys, unknown ids). */
const CACHE_ENTRIES = 10_000;

const keyPath = (id: string) => `auth/keys/${id}.json`;
const digest = (pepper: string, secret: string) => createHmac('sha256', pepper).update(secret).digest();

function newKeyId(): string {
  const bytes = randomBytes(12);
  return Array.from(bytes, (byte) => ALPHANUMERIC[byte % ALPHANUMERIC.length]).join('');
}

/** A new pepper: 32 random bytes, hex (what `openssl rand -hex 32` gives). */
export const newPepper = () => randomBytes(32).toString('hex');

/** The key id a token names, or undefined for a malformed token. */
export const keyIdOf = (token: string) => TOKEN.exec(token)?.[1];

export interface NewKey {
  tenant: string;
  name: string;
  role: Role;
  limits: KeyLimits;
  webhook?: ApiKey['webhook'];
}

export class KeyStore {
  /**
   * What this replica read of each key id, in two bounded caches: ids that name no key (a
   * guessing client's) live apart from real keys, so a flood of random ids cannot evict
   * them. Real keys are kept least-recently-used first.
   */
  private readonly known = new Map<string, { key: ApiKey; until: number }>();
  private readonly unknown = new Map<string, number>();
  /** One storage read per id at a time, however many requests name it. */
  private readonly reading = new Map<string, Promise<ApiKey | undefined>>();

  constructor(
    private readonly store: ObjectStore,
    private readonly pepper: string,
  ) {}

  /** A new key; the secret is returned once and never stored. */
  async create(request: NewKey): Promise<{ key: ApiKey; token: string }> {
    const id = newKeyId();
    const secret = randomBytes(32).toString('base64url');
    const key = ApiKey.parse({
      v: 1,
      id,
      ...request,
      webhook: request.webhook ?? null,
      hash: digest(this.pepper, secret).toString('hex'),
      created_at: new Date().toISOString(),
      revoked_at: null,
    });
    if ((await this.store.putIfAbsent(keyPath(id), JSON.stringify(key), 'application/json')) === undefined) {
      throw new Error(`key id ${id} exists already`);
    }
    return { key, token: `i2i_${id}_${secret}` };
  }

  async list(): Promise<ApiKey[]> {
    const keys: ApiKey[] = [];
    for await (const { key } of this.store.list('auth/keys/')) {
      const id = /^auth\/keys\/([A-Za-z0-9]{12})\.json$/.exec(key)?.[1];
      const found = id && (await this.read(id));
      if (found) keys.push(found);
    }
    return keys.sort((a, b) => a.created_at.localeCompare(b.created_at));
  }

  /** Revokes a key; false when there is no such key. */
  async revoke(id: string): Promise<boolean> {
    const stored = await this.store.get(keyPath(id));
    if (!stored) return false;
    const key = ApiKey.parse(JSON.parse(stored.bytes.toString('utf8')));
    if (key.revoked_at) return true;
    const revoked = { ...key, revoked_at: new Date().toISOString() };
    if ((await this.store.putIfMatch(keyPath(id), JSON.stringify(revoked), 'application/json', stored.etag)) === undefined) {
      return this.revoke(id); // changed meanwhile: read again
    }
    this.known.delete(id);
    return true;
  }

  /** Whether any key exists (an API that must have keys refuses to start without one). */
  async any(): Promise<boolean> {
    for await (const _ of this.store.list('auth/keys/')) return true;
    return false;
  }

  /**
   * The live key a bearer token names, or undefined for a malformed, unknown, revoked or wrong
   * one (the caller must not say which). The secret is compared in constant time.
   */
  async verify(token: string, signal?: AbortSignal): Promise<ApiKey | undefined> {
    const match = TOKEN.exec(token);
    if (!match) return undefined;
    const [, id, secret] = match;
    const key = await this.cached(id!, signal);
    if (!key || key.revoked_at) return undefined;
    const expected = Buffer.from(key.hash, 'hex');
    const actual = digest(this.pepper, secret!);
    return expected.length === actual.length && timingSafeEqual(expected, actual) ? key : undefined;
  }

  /** Whether this replica knows `id` as a key now (a request naming it costs no storage read). */
  isKnown(id: string): boolean {
    return (this.known.get(id)?.until ?? 0) > Date.now();
  }

  private async cached(id: string, signal?: AbortSignal): Promise<ApiKey | undefined> {
    const now = Date.now();
    const hit = this.known.get(id);
    if (hit && hit.until > now) {
      this.known.delete(id); // most recently used last
      this.known.set(id, hit);
      return hit.key;
    }
    if ((this.unknown.get(id) ?? 0) > now) return undefined;
    let read = this.reading.get(id);
    if (!read) {
      read = this.read(id, signal).finally(() => this.reading.delete(id));
      this.reading.set(id, read);
    }
    const key = await read;
    this.remember(id, key);
    return key;
  }

  private remember(id: string, key: ApiKey | undefined): void {
    const until = Date.now() + CACHE_MS;
    const [cache, entry] = key ? [this.known, { key, until }] : [this.unknown, until];
    this.known.delete(id);
    this.unknown.delete(id);
    (cache as Map<string, unknown>).set(id, entry);
    if (cache.size > CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
  }

  private async read(id: string, signal?: AbortSignal): Promise<ApiKey | undefined> {
    const stored = await this.store.get(keyPath(id), signal);
    return stored && ApiKey.parse(JSON.parse(stored.bytes.toString('utf8')));
  }
}

/** "500/min" megapixel-steps (decimals allowed, "2.5/s") as a cost budget. */
export function parseCost(text: string): NonNullable<KeyLimits['cost']> {
  const match = /^(\d+(?:\.\d+)?)\/(s|sec|min|h|hour)$/.exec(text.trim());
  if (!match || !(Number(match[1]) > 0)) throw new Error(`a cost budget is N/s, N/min or N/h megapixel-steps with N > 0, not "${text}"`);
  const per = { s: 1, sec: 1, min: 60, h: 3600, hour: 3600 }[match[2] as 's'];
  return { megapixel_steps: Number(match[1]), per_seconds: per };
}

/** "600/min", "10/s", "36000/h" as a token bucket. */
export function parseRate(text: string): NonNullable<KeyLimits['rate']> {
  const match = /^(\d+)\/(s|sec|min|h|hour)$/.exec(text.trim());
  if (!match || Number(match[1]) < 1) throw new Error(`a rate is N/s, N/min or N/h with N >= 1, not "${text}"`);
  const per = { s: 1, sec: 1, min: 60, h: 3600, hour: 3600 }[match[2] as 's'];
  return { points: Number(match[1]), per_seconds: per };
}
