// Limits that hold across API replicas, counted in Redis: per key a submission rate and a cap
// on jobs queued or running at once; per model a queue-depth ceiling that refuses low, then
// normal, then high priority. With Redis down the policy is LIMITS_WHEN_REDIS_DOWN: `open`
// counts in this process only (rate-limiter-flexible's insurance limiter) and skips the
// concurrency cap; `closed` answers 503.
import { randomUUID } from 'node:crypto';
import { Redis, type Result } from 'ioredis';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import type { ApiConfig } from '../common/config.js';
import type { QueueDepth } from '../common/depth.js';
import type { ApiKey } from '../common/keys.js';
import type { Logger } from '../common/logger.js';
import type { Priority } from '../common/topics.js';
import { race } from '../common/deadline.js';
import { TooManyRequests, Unavailable, ValidationError } from './errors.js';

/** A job slot older than this is forgotten even if its ending was never seen (a lost event). */
const SLOT_MAX_AGE_MS = 24 * 3600 * 1000;
/** Past the ceiling, each priority's share of it: low at half, normal at the ceiling, high at twice. */
const CEILING_SHARE: Record<Priority, number> = { low: 0.5, normal: 1, high: 2 };

/** Takes a slot when fewer than ARGV[1] are taken: atomic, so two replicas cannot both take the last one. */
const TAKE_SLOT = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
return 0`;

// The Lua command defined in the constructor, as ioredis documents typing custom commands.
declare module 'ioredis' {
  interface RedisCommander<Context> {
    takeSlot(set: string, limit: number, now: number, member: string, oldest: number): Result<number, Context>;
  }
}

export type RateHeaders = Record<'RateLimit-Limit' | 'RateLimit-Remaining' | 'RateLimit-Reset', string>;

/** A submission let in: its slot becomes the job's once accepted, or is given back (with what it was charged). */
export interface Admission {
  headers: RateHeaders | undefined;
  /** Spends the job's cost (pixel-steps: computed pixels x denoising steps) from the key's budget, or throws. */
  charge(pixelSteps: number, what: string): Promise<void>;
  accept(jobId: string): Promise<void>;
  release(): Promise<void>;
}

/** The budget counts in thousands of pixel-steps: whole numbers for Redis, fine enough for a 64x64 job. */
const COST_UNIT = 1000;

export interface LimitsOptions {
  config: Pick<ApiConfig, 'REDIS_URL' | 'REDIS_COMMAND_TIMEOUT_MS' | 'LIMITS_WHEN_REDIS_DOWN' | 'MODEL_QUEUE_CEILING' | 'TOPIC_PREFIX'>;
  depth: Pick<QueueDepth, 'get'>;
  log: Logger;
}

const headersOf = (limit: number, res: RateLimiterRes): RateHeaders => ({
  'RateLimit-Limit': String(limit),
  'RateLimit-Remaining': String(Math.max(0, res.remainingPoints)),
  'RateLimit-Reset': String(Math.ceil(res.msBeforeNext / 1000)),
});

export class Limits {
  readonly redis: Redis;
  private readonly limiters = new Map<string, RateLimiterRedis>();
  private readonly prefix: string;
  private readonly failOpen: boolean;
  private reconciling: NodeJS.Timeout | undefined;

  constructor(private readonly options: LimitsOptions) {
    // Fail fast when Redis is away (a closed connection) or frozen (an open one that never
    // answers): a request must not wait on it.
    this.redis = new Redis(options.config.REDIS_URL, {
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      connectTimeout: 1000,
      commandTimeout: options.config.REDIS_COMMAND_TIMEOUT_MS,
    });
    this.redis.on('error', (error) => options.log.debug({ err: error }, 'redis'));
    this.redis.defineCommand('takeSlot', { numberOfKeys: 1, lua: TAKE_SLOT });
    this.prefix = `${options.config.TOPIC_PREFIX}:limits`;
    this.failOpen = options.config.LIMITS_WHEN_REDIS_DOWN === 'open';
  }

  async connect(): Promise<void> {
    await this.redis.connect().catch((error: unknown) => this.options.log.warn({ err: error }, 'redis unreachable at start; limits fail ' + (this.failOpen ? 'open' : 'closed')));
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  close(): void {
    clearInterval(this.reconciling);
    this.redis.disconnect();
  }

  /** Lets a key's submission in or throws 429/503: its rate, then its concurrency (before the upload is read). */
  async admit(key: ApiKey | undefined): Promise<Admission> {
    const headers = key?.limits.rate ? await this.consume(key, key.limits.rate) : undefined;
    const slot = key?.limits.concurrency ? await this.takeSlot(key, key.limits.concurrency) : undefined;
    let charged = 0;
    return {
      headers,
      charge: async (pixelSteps, what) => {
        if (key?.limits.cost) charged = await this.spend(key, key.limits.cost, Math.ceil(pixelSteps / COST_UNIT), what);
      },
      accept: async (jobId) => {
        if (!slot) return;
        await this.quietly(this.redis.multi().zrem(slot.set, slot.member).zadd(slot.set, Date.now(), jobId).set(this.jobKey(jobId), slot.set, 'PX', SLOT_MAX_AGE_MS).exec());
      },
      release: async () => {
        if (slot) await this.quietly(this.redis.zrem(slot.set, slot.member));
        if (charged && key?.limits.cost) await this.quietly(this.costLimiter(key.limits.cost).reward(key.id, charged));
      },
    };
  }

  /** A job ended: its key's slot is free again (called once per ending by one replica). */
  async ended(jobId: string): Promise<void> {
    const set = await this.quietly(this.redis.get(this.jobKey(jobId)));
    if (set) await this.quietly(this.redis.multi().zrem(set, jobId).del(this.jobKey(jobId)).exec());
  }

  /**
   * Frees the slots whose job is no longer live, whatever happened to its ending (a Redis error
   * when it came, an event missed): every job in a key's slot set is looked up, and one that
   * ended or has no record is removed; a reservation older than an upload can take is too.
   * One replica at a time (a lock in Redis); returns the slots freed (undefined: another
   * replica holds the lock). Its work follows the jobs in flight, not the jobs stored.
   */
  async reconcile(isLive: (jobId: string) => Promise<boolean>, reservationMaxAgeMs: number, lockMs: number): Promise<number | undefined> {
    const locked = await this.redis.set(`${this.prefix}:reconcile`, randomUUID(), 'PX', lockMs, 'NX');
    if (!locked) return undefined;
    let freed = 0;
    for await (const sets of this.redis.scanStream({ match: `${this.prefix}:active:*`, count: 100 }) as AsyncIterable<string[]>) {
      for (const set of sets) {
        const members = await this.redis.zrange(set, 0, -1, 'WITHSCORES');
        for (let i = 0; i < members.length; i += 2) {
          const [member, since] = [members[i]!, Number(members[i + 1])];
          const stale = member.startsWith('reserved:') ? since < Date.now() - reservationMaxAgeMs : !(await isLive(member));
          if (stale && (await this.redis.zrem(set, member))) freed++;
        }
      }
    }
    return freed;
  }

  /** Runs reconcile every `intervalMs` (on whichever replica gets the lock), until close(). */
  reconcileEvery(intervalMs: number, isLive: (jobId: string) => Promise<boolean>, reservationMaxAgeMs: number): void {
    const { log } = this.options;
    const pass = () =>
      void this.reconcile(isLive, reservationMaxAgeMs, intervalMs)
        .then((freed) => freed && log.info({ freed }, 'concurrency slots of ended jobs freed'))
        .catch((error: unknown) => log.warn({ err: error }, 'could not reconcile the concurrency slots'));
    this.reconciling = setInterval(pass, intervalMs);
    this.reconciling.unref();
  }

  /** The rate headers of a key without spending a point (for answers other than submissions). */
  async peek(key: ApiKey): Promise<RateHeaders | undefined> {
    const rate = key.limits.rate;
    if (!rate) return undefined;
    const res = await this.limiter(rate).get(key.id).catch(() => null);
    return headersOf(rate.points, res ?? new RateLimiterRes(rate.points, 0, 0));
  }

  /**
   * Throws 429 when the model's queue is past what this priority may join. A depth that cannot
   * be read before `signal` aborts (Kafka slow or away, a topic without its leader yet) leaves
   * the ceiling unchecked: the enqueue that follows, under the request's deadline, decides.
   */
  async checkCeiling(model: string, priority: Priority, signal: AbortSignal): Promise<void> {
    const ceiling = this.options.config.MODEL_QUEUE_CEILING;
    if (!ceiling) return;
    const depths = await race(this.options.depth.get(), signal).catch((error: unknown) => {
      this.options.log.debug({ err: error }, 'queue depth unknown: the ceiling is not checked');
      return undefined;
    });
    const depth = depths?.get(model)?.total ?? 0;
    const limit = Math.round(ceiling * CEILING_SHARE[priority]);
    if (depth >= limit) {
      throw new TooManyRequests(`the queue of ${model} holds ${depth} jobs; ${priority} priority is taken below ${limit}`, {
        code: 'queue_full',
        field: 'priority',
        retryAfter: 10,
      });
    }
  }

  private limiter({ points, per_seconds }: NonNullable<ApiKey['limits']['rate']>, kind = 'rate'): RateLimiterRedis {
    const name = `${kind}:${points}/${per_seconds}`;
    let limiter = this.limiters.get(name);
    if (!limiter) {
      limiter = new RateLimiterRedis({
        storeClient: this.redis,
        keyPrefix: `${this.prefix}:${name}`,
        points,
        duration: per_seconds,
        insuranceLimiter: this.failOpen ? new RateLimiterMemory({ points, duration: per_seconds }) : undefined,
      });
      this.limiters.set(name, limiter);
    }
    return limiter;
  }

  private costLimiter(cost: NonNullable<ApiKey['limits']['cost']>): RateLimiterRedis {
    return this.limiter({ points: Math.round(cost.megapixel_steps * COST_UNIT), per_seconds: cost.per_seconds }, 'cost');
  }

  /** Spends `points` of the key's cost budget; returns them, or throws 429 (400 for a job over the whole budget). */
  private async spend(key: ApiKey, cost: NonNullable<ApiKey['limits']['cost']>, points: number, what: string): Promise<number> {
    const megapixelSteps = (points * COST_UNIT) / 1e6;
    const budget = `this key may spend ${cost.megapixel_steps} megapixel-steps per ${cost.per_seconds} s`;
    if (points > Math.round(cost.megapixel_steps * COST_UNIT)) {
      throw new ValidationError('image', `this job costs ${megapixelSteps.toFixed(1)} megapixel-steps (${what}); ${budget}: send a smaller image or fewer steps`, {
        code: 'cost_limit',
      });
    }
    const limiter = this.costLimiter(cost);
    try {
      await limiter.consume(key.id, points);
      return points;
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw this.down(rejection);
      // The refused job spent nothing: the limiter counted it all the same.
      await this.quietly(limiter.reward(key.id, points));
      const retryAfter = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
      throw new TooManyRequests(`this job costs ${megapixelSteps.toFixed(1)} megapixel-steps (${what}); ${budget}; retry in ${retryAfter} s`, {
        code: 'cost_limit',
        field: 'image',
        retryAfter,
      });
    }
  }

  private async consume(key: ApiKey, rate: NonNullable<ApiKey['limits']['rate']>): Promise<RateHeaders> {
    try {
      return headersOf(rate.points, await this.limiter(rate).consume(key.id));
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) throw this.down(rejection);
      const retryAfter = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
      throw new TooManyRequests(`this key may submit ${rate.points} jobs per ${rate.per_seconds} s; retry in ${retryAfter} s`, {
        code: 'rate_limit',
        retryAfter,
        headers: headersOf(rate.points, rejection),
      });
    }
  }

  private async takeSlot(key: ApiKey, limit: number): Promise<{ set: string; member: string } | undefined> {
    const set = `${this.prefix}:active:${key.id}`;
    const member = `reserved:${randomUUID()}`;
    const now = Date.now();
    let taken: number;
    try {
      taken = await this.redis.takeSlot(set, limit, now, member, now - SLOT_MAX_AGE_MS);
    } catch (error) {
      if (this.failOpen) return undefined;
      throw this.down(error);
    }
    if (!taken) {
      throw new TooManyRequests(`this key may have ${limit} jobs queued or running at once; retry when one ends`, {
        code: 'concurrency_limit',
        retryAfter: 5,
      });
    }
    return { set, member };
  }

  private down(error: unknown): Unavailable {
    return new Unavailable('the limits store (Redis) is unavailable; retry later', { code: 'limits_unavailable', cause: error });
  }

  private jobKey(jobId: string): string {
    return `${this.prefix}:job:${jobId}`;
  }

  /** Bookkeeping after the answer: a Redis failure is logged, not the client's problem. */
  private async quietly<T>(work: Promise<T>): Promise<T | undefined> {
    return work.catch((error: unknown) => {
      this.options.log.warn({ err: error }, 'could not update the limits store');
      return undefined;
    });
  }
}
