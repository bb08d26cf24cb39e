// API keys at the door: which requests need one, and who a valid one says the caller is.
// The job routes need a key when auth is on; /api/models, the health probes, the docs and the
// OpenAPI document stay open, and /metrics as METRICS_ACCESS says. A missing, malformed,
// unknown, revoked or wrong key gets the same 401.
import type { MiddlewareHandler } from 'hono';
import type { ApiConfig } from '../common/config.js';
import { keyIdOf, type ApiKey, type KeyStore } from '../common/keys.js';
import type { Logger } from '../common/logger.js';
import { call } from './dependency.js';
import type { AppEnv } from './env.js';
import { ConfigError } from '../common/config.js';
import { TooManyRequests, Unauthorized } from './errors.js';
import { RateLimiterMemory } from 'rate-limiter-flexible';
import type { Limits } from './limits.js';

const LOOPBACK = /^(127(?:\.\d{1,3}){3}|::1|localhost)$/i;

/** Whether this API requires keys: AUTH when set, else whenever it listens beyond loopback. */
export function authRequired(config: Pick<ApiConfig, 'AUTH' | 'API_HOST'>): boolean {
  return config.AUTH ? config.AUTH === 'on' : !LOOPBACK.test(config.API_HOST);
}

/** Refuses a configuration that would expose the API without keys; warns when told to. */
export async function checkAuth(config: ApiConfig, keys: KeyStore | undefined, log: Logger): Promise<void> {
  if (!authRequired(config)) {
    if (!LOOPBACK.test(config.API_HOST)) log.warn({ host: config.API_HOST }, 'AUTH=off: the API answers anyone who reaches it, without a key');
    return;
  }
  if (!keys) throw new ConfigError(`the API listens on ${config.API_HOST} and needs API keys: set AUTH_PEPPER (see .env.example), or AUTH=off to run without keys`);
  if (!(await keys.any())) {
    throw new ConfigError('the API needs API keys and none exists: create one with `npm run keys -- create --tenant <t> --name <n> --admin`, or set AUTH=off');
  }
}

/** The job routes (everything under /api/ but the model list) and, if so configured, /metrics. */
function needsKey(path: string, metricsOpen: boolean): boolean {
  if (path === '/metrics') return !metricsOpen;
  return path.startsWith('/api/') && path !== '/api/models';
}

/**
 * Sets c.var.principal from the request's key, or answers 401. Every answer to a keyed request
 * carries the key's RateLimit-* fields (a submission's own, else read without spending a point).
 */
export function authenticate(config: ApiConfig, keys: KeyStore | undefined, limits: Pick<Limits, 'peek'>): MiddlewareHandler<AppEnv> {
  const required = authRequired(config);
  const metricsOpen = config.METRICS_ACCESS === 'open';
  // Failed key checks per client address: past the limit, a key this replica does not already
  // know is refused without a storage read (a known key is never held back).
  const failures = new RateLimiterMemory({ points: config.AUTH_FAILURES_PER_MINUTE, duration: 60 });
  return async (c, next) => {
    c.set('principal', undefined);
    if (!required || !needsKey(c.req.path, metricsOpen)) return next();
    const header = c.req.header('authorization') ?? '';
    const token = /^Bearer\s+(\S+)$/i.exec(header)?.[1];
    const address = c.env.incoming.socket.remoteAddress ?? 'unknown';
    if (!(token && keys?.isKnown(keyIdOf(token) ?? ''))) await refuseRepeatedFailures(failures, address);
    // The key check has a deadline of its own: the request's starts after the upload is read,
    // however long a slow client takes to send it.
    const checkDeadline = AbortSignal.timeout(config.DEPENDENCY_TIMEOUT_MS);
    const key: ApiKey | undefined = token && keys ? await call('storage', (signal) => keys.verify(token, signal), checkDeadline) : undefined;
    if (!key) {
      await failures.penalty(address).catch(() => {});
      throw new Unauthorized();
    }
    if (c.req.path === '/metrics' && key.role !== 'admin') throw new Unauthorized();
    c.set('principal', key);
    await next();
    if (key.limits.rate && !c.res.headers.has('RateLimit-Limit')) {
      for (const [name, value] of Object.entries((await limits.peek(key)) ?? {})) c.res.headers.set(name, value);
    }
  };
}

async function refuseRepeatedFailures(failures: RateLimiterMemory, address: string): Promise<void> {
  const spent = await failures.get(address);
  if (!spent || spent.remainingPoints > 0) return;
  const retryAfter = Math.max(1, Math.ceil(spent.msBeforeNext / 1000));
  throw new TooManyRequests(`too many requests without a valid API key from this address; retry in ${retryAfter} s`, {
    code: 'auth_failures',
    field: 'Authorization',
    retryAfter,
  });
}

/** The tenant a request acts for (null: no keys), and whether it may see every tenant's jobs. */
export const tenantOf = (principal: ApiKey | undefined) => principal?.tenant ?? null;
export const seesAll = (principal: ApiKey | undefined) => !principal || principal.role === 'admin';
