// Worker tokens: `i2w_<worker id>_<secret>`, a credential of its own kind, separate from API
// keys (an API key never opens a worker connection, a worker token never submits a job). The
// record (auth/workers/<id>.json) holds the worker's name, a SHA-256 of the secret (32 random
// bytes need no pepper), and what it earned: strikes, and the eviction that blacklists it.
// The live view of a connected worker (workers/<id>.json) is written by the gateway that holds
// its connection and read by GET /api/workers.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import type { ObjectStore } from './storage.js';

export const WORKER_ID = /^[A-Za-z0-9]{12}$/;
const TOKEN = /^i2w_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const ALPHANUMERIC = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** How long a gateway trusts what it read of a token: a revocation reaches a live connection within this. */
const CACHE_MS = 2000;

export const WorkerToken = z.object({
  v: z.literal(1),
  id: z.string().regex(WORKER_ID),
  name: z.string().min(1).max(200),
  /** SHA-256 of the secret, hex. */
  hash: z.string(),
  created_at: z.string(),
  revoked_at: z.string().nullable(),
  /** Results of this worker outvoted by the others. */
  strikes: z.array(z.object({ job: z.string(), at: z.string() })).default([]),
  /** Set once it had too many strikes: its token is refused from then on. */
  evicted: z
    .object({
      at: z.string(),
      reason: z.string(),
      /** Its recent results no other worker checked: for an operator to look at. */
      unverified_jobs: z.array(z.string()),
    })
    .nullable()
    .default(null),
});
export type WorkerToken = z.infer<typeof WorkerToken>;

/** What GET /api/workers shows of a worker, as its gateway last wrote it. */
export const WorkerStatus = z.object({
  v: z.literal(1),
  id: z.string(),
  name: z.string(),
  state: z.enum(['connected', 'disconnected', 'evicted', 'revoked']),
  connected_since: z.string().nullable(),
  models: z.array(z.string()),
  capacity: z.number().int(),
  device: z.string().nullable(),
  jobs_done: z.number().int(),
  failures: z.number().int(),
  strikes: z.number().int(),
  updated_at: z.string(),
});
export type WorkerStatus = z.infer<typeof WorkerStatus>;

const tokenPath = (id: string) => `auth/workers/${id}.json`;
const statusPath = (id: string) => `workers/${id}.json`;
const digest = (secret: string) => createHash('sha256').update(secret).digest();
const JSON_TYPE = 'application/json';

export class WorkerStore {
  private readonly cache = new Map<string, { token: WorkerToken | undefined; until: number }>();

  constructor(private readonly store: ObjectStore) {}

  /** A new worker; its token is returned once and never stored. */
  async create(name: string): Promise<{ worker: WorkerToken; token: string }> {
    const id = Array.from(randomBytes(12), (byte) => ALPHANUMERIC[byte % ALPHANUMERIC.length]).join('');
    const secret = randomBytes(32).toString('base64url');
    const worker = WorkerToken.parse({
      v: 1, id, name, hash: digest(secret).toString('hex'), created_at: new Date().toISOString(), revoked_at: null,
    });
    if ((await this.store.putIfAbsent(tokenPath(id), JSON.stringify(worker), JSON_TYPE)) === undefined) {
      throw new Error(`worker id ${id} exists already`);
    }
    return { worker, token: `i2w_${id}_${secret}` };
  }

  async list(): Promise<WorkerToken[]> {
    const found: WorkerToken[] = [];
    for await (const { key } of this.store.list('auth/workers/')) {
      const id = /^auth\/workers\/([A-Za-z0-9]{12})\.json$/.exec(key)?.[1];
      const worker = id && (await this.read(id));
      if (worker) found.push(worker);
    }
    return found.sort((a, b) => a.created_at.localeCompare(b.created_at));
  }

  async get(id: string): Promise<WorkerToken | undefined> {
    return this.read(id);
  }

  /** Revokes a token; false when there is no such worker. */
  async revoke(id: string): Promise<boolean> {
    const changed = await this.update(id, (w) => (w.revoked_at ? undefined : { ...w, revoked_at: new Date().toISOString() }));
    return changed !== undefined;
  }

  /** Records a strike; evicts the worker once it has `maxStrikes`. Returns the record after the change. */
  async strike(id: string, job: string, maxStrikes: number, unverifiedJobs: () => string[]): Promise<WorkerToken | undefined> {
    return this.update(id, (w) => {
      if (w.strikes.some((s) => s.job === job)) return undefined; // one strike per job, whoever records it
      const strikes = [...w.strikes, { job, at: new Date().toISOString() }];
      const evicted =
        w.evicted ?? (strikes.length >= maxStrikes ? { at: new Date().toISOString(), reason: `${strikes.length} strikes`, unverified_jobs: unverifiedJobs() } : null);
      return { ...w, strikes, evicted };
    });
  }

  /**
   * The worker a token names if it may connect: undefined for a malformed, unknown, revoked,
   * evicted or wrong one (the caller must not say which). Constant-time comparison.
   */
  async verify(token: string): Promise<WorkerToken | undefined> {
    const match = TOKEN.exec(token);
    if (!match) return undefined;
    const [, id, secret] = match;
    const worker = await this.cached(id!);
    if (!worker || !allowed(worker)) return undefined;
    const expected = Buffer.from(worker.hash, 'hex');
    const actual = digest(secret!);
    return expected.length === actual.length && timingSafeEqual(expected, actual) ? worker : undefined;
  }

  /** Whether a connected worker may stay (read through the short cache). */
  async stillAllowed(id: string): Promise<boolean> {
    const worker = await this.cached(id);
    return Boolean(worker && allowed(worker));
  }

  async writeStatus(status: WorkerStatus): Promise<void> {
    await this.store.put(statusPath(status.id), JSON.stringify(status), JSON_TYPE);
  }

  /** Every worker with its live status (or, for one never connected, what its token says). */
  async statuses(): Promise<WorkerStatus[]> {
    const workers = await this.list();
    return Promise.all(
      workers.map(async (worker) => {
        const stored = await this.store.get(statusPath(worker.id));
        const live = stored ? WorkerStatus.parse(JSON.parse(stored.bytes.toString('utf8'))) : undefined;
        const state = worker.evicted ? 'evicted' : worker.revoked_at ? 'revoked' : (live?.state ?? 'disconnected');
        return {
          v: 1 as const, id: worker.id, name: worker.name, connected_since: null, models: [], capacity: 0, device: null,
          jobs_done: 0, failures: 0, updated_at: worker.created_at, ...live, state, strikes: worker.strikes.length,
        };
      }),
    );
  }

  private async update(id: string, change: (worker: WorkerToken) => WorkerToken | undefined): Promise<WorkerToken | undefined> {
    for (;;) {
      const stored = await this.store.get(tokenPath(id));
      if (!stored) return undefined;
      const current = WorkerToken.parse(JSON.parse(stored.bytes.toString('utf8')));
      const next = change(current);
      if (!next) return current;
      if ((await this.store.putIfMatch(tokenPath(id), JSON.stringify(next), JSON_TYPE, stored.etag)) !== undefined) {
        this.cache.delete(id);
        return next;
      }
    }
  }

  private async cached(id: string): Promise<WorkerToken | undefined> {
    const hit = this.cache.get(id);
    if (hit && hit.until > Date.now()) return hit.token;
    const token = await this.read(id);
    this.cache.set(id, { token, until: Date.now() + CACHE_MS });
    return token;
  }

  private async read(id: string): Promise<WorkerToken | undefined> {
    const stored = await this.store.get(tokenPath(id));
    return stored && WorkerToken.parse(JSON.parse(stored.bytes.toString('utf8')));
  }
}

const allowed = (worker: WorkerToken) => !worker.revoked_at && !worker.evicted;
