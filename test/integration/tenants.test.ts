// API keys, tenants and limits against the real MinIO, Kafka and Redis, with two API replicas
// sharing them: each tenant sees only its own jobs, a revoked key is refused by both within
// seconds, and the rate and concurrency limits hold across replicas.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyStore } from '../../common/keys.js';
import * as lifecycle from '../../common/lifecycle.js';
import { ObjectStore } from '../../common/storage.js';
import { json, pngImage, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { waitFor } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';
import { ChildService, freePort, modelNamesFile } from '../helpers/processes.js';

const PEPPER = 'test-pepper-0123456789';
const shared = { AUTH: 'on', AUTH_PEPPER: PEPPER, S3_BUCKET: uniqueName('tenants'), TOPIC_PREFIX: uniqueName('tenants') };
let replicas: TestApi[];
const tokens: Record<string, string> = {};
const ids: Record<string, string> = {};

const bearer = (who: string) => ({ Authorization: `Bearer ${tokens[who]}` });
const submit = (api: TestApi, who: string, headers: Record<string, string> = {}) =>
  postJob(api.url, { headers: { ...bearer(who), ...headers } });

beforeAll(async () => {
  replicas = [await startTestApi(shared), await startTestApi(shared)];
  const keys = new KeyStore(new ObjectStore(replicas[0]!.config), PEPPER);
  const make = async (who: string, tenant: string, options: Partial<Parameters<KeyStore['create']>[0]> = {}) => {
    const { key, token } = await keys.create({ tenant, name: who, role: 'user', limits: { rate: null, concurrency: null }, ...options });
    tokens[who] = token;
    ids[who] = key.id;
  };
  await make('alice', 'acme');
  await make('bob', 'globex');
  await make('root', 'ops', { role: 'admin' });
  await make('limited', 'acme', { limits: { rate: { points: 3, per_seconds: 60 }, concurrency: null } });
  await make('capped', 'acme', { limits: { rate: null, concurrency: 2 } });
  await make('single', 'acme', { limits: { rate: null, concurrency: 1 } });
  await make('budget', 'acme', { limits: { rate: null, concurrency: null, cost: { megapixel_steps: 60, per_seconds: 60 } } });
  await make('frugal', 'acme', { limits: { rate: null, concurrency: null, cost: { megapixel_steps: 20, per_seconds: 60 } } });
}, 120_000);

afterAll(async () => {
  for (const api of replicas ?? []) await api.close();
});

describe('API keys', () => {
  it('answers 401 with WWW-Authenticate, the same for a missing, malformed, unknown and wrong key', async () => {
    const [api] = replicas;
    const wrong = tokens.alice!.slice(0, -4) + 'AAAA';
    const unknown = `i2i_ZZZZZZZZZZZZ_${'a'.repeat(43)}`;
    const bodies = new Set<string>();
    for (const headers of <Record<string, string>[]>[{}, { Authorization: 'Bearer nonsense' }, { Authorization: `Bearer ${unknown}` }, { Authorization: `Bearer ${wrong}` }]) {
      const response = await postJob(api!.url, { headers });
      expect(response.status).toBe(401);
      expect(response.headers.get('www-authenticate')).toMatch(/^Bearer/);
      // The same answer but for its request id, each request's own.
      const { error } = await response.json();
      bodies.add(JSON.stringify({ ...error, request_id: typeof error.request_id }));
    }
    expect(bodies.size).toBe(1);
    // The open routes stay open.
    expect((await fetch(`${api!.url}/api/models`)).status).toBe(200);
    expect((await fetch(`${api!.url}/healthz`)).status).toBe(200);
  });

  it('keeps each tenant to its own jobs on every route (404 as for no job); an admin sees all', async () => {
    const [a, b] = replicas;
    const response = await submit(a!, 'alice');
    expect(response.status).toBe(202);
    const job = await json(response);
    for (const path of [`/api/jobs/${job.id}`, `/api/results/${job.id}`, `/api/jobs/${job.id}/events`, `/api/jobs/${job.id}/webhooks`]) {
      const own = await fetch(`${b!.url}${path}`, { headers: bearer('alice') });
      expect(own.status, path).not.toBe(404);
      await own.body?.cancel();
      const other = await fetch(`${b!.url}${path}`, { headers: bearer('bob') });
      expect(other.status, path).toBe(404);
      expect((await json(other)).error.code).toBe('job_not_found');
      const admin = await fetch(`${a!.url}${path}`, { headers: bearer('root') });
      expect(admin.status, path).not.toBe(404);
      await admin.body?.cancel();
    }
    const cancel = await fetch(`${a!.url}/api/jobs/${job.id}`, { method: 'DELETE', headers: bearer('bob') });
    expect(cancel.status).toBe(404);
    expect((await a!.services.records.get(job.id))?.status).toBe('queued'); // left alone
  });

  it('scopes Idempotency-Key per tenant', async () => {
    const key = { 'Idempotency-Key': uniqueName('same') };
    const first = await json(await submit(replicas[0]!, 'alice', key));
    const again = await json(await submit(replicas[1]!, 'alice', key));
    const other = await json(await submit(replicas[0]!, 'bob', key));
    expect(again.id).toBe(first.id);
    expect(other.id).not.toBe(first.id);
  });

  it('holds a rate limit across replicas, with RateLimit fields and Retry-After', async () => {
    const statuses: number[] = [];
    const remaining: string[] = [];
    for (let i = 0; i < 4; i++) {
      const response = await submit(replicas[i % 2]!, 'limited');
      statuses.push(response.status);
      remaining.push(response.headers.get('ratelimit-remaining') ?? '');
      expect(response.headers.get('ratelimit-limit')).toBe('3');
      if (response.status === 429) {
        expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
        expect((await json(response)).error.code).toBe('rate_limit');
      } else await response.body?.cancel();
    }
    expect(statuses).toEqual([202, 202, 202, 429]);
    expect(remaining).toEqual(['2', '1', '0', '0']);
  });

  it('caps jobs queued or running at once across replicas, and frees a slot when a job ends', async () => {
    const first = await json(await submit(replicas[0]!, 'capped'));
    expect((await submit(replicas[1]!, 'capped')).status).toBe(202);
    const refused = await submit(replicas[0]!, 'capped');
    expect(refused.status).toBe(429);
    expect((await json(refused)).error.code).toBe('concurrency_limit');
    await fetch(`${replicas[1]!.url}/api/jobs/${first.id}`, { method: 'DELETE', headers: bearer('capped') });
    // The canceled event reaches the replicas' shared follower, which frees the slot.
    await waitFor(async () => {
      const response = await submit(replicas[1]!, 'capped');
      await response.body?.cancel();
      return response.status === 202 ? true : undefined;
    }, 20_000, 'a freed slot');
  });

  it('charges each job its pixel-steps from the key’s cost budget, across replicas; one over the whole budget is refused outright', async () => {
    const big = await pngImage(1024, 1024);
    const costly = { model_name: 'tiny', prompt: 'big', steps: '50', strength: '1' }; // 1024x1024 x 50 steps: 52.4 megapixel-steps
    const post = (api: TestApi, who: string) => postJob(api.url, { image: big, query: costly, headers: bearer(who) });
    const first = await post(replicas[0]!, 'budget');
    expect(first.status, await first.clone().text()).toBe(202);
    const refused = await post(replicas[1]!, 'budget');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await json(refused)).error).toMatchObject({ code: 'cost_limit', field: 'image', message: expect.stringContaining('52.4 megapixel-steps (1024x1024, 50 denoising steps)') });
    // What is left (7.6) still takes small jobs.
    expect((await submit(replicas[1]!, 'budget')).status).toBe(202);
    const never = await post(replicas[0]!, 'frugal');
    expect(never.status).toBe(400);
    expect((await json(never)).error).toMatchObject({ code: 'cost_limit', field: 'image', message: expect.stringMatching(/smaller image or fewer steps/) });
  });

  it('frees the slot of a job whose ending never reached the limits, at the next reconciliation', async () => {
    const { id } = await json(await submit(replicas[0]!, 'single'));
    // The job ends without its event: as after a Redis error at its ending, or an event missed.
    await replicas[0]!.services.records.apply(id, (record) => lifecycle.cancel(record));
    expect((await submit(replicas[1]!, 'single')).status).toBe(429);
    const { limits, records } = replicas[1]!.services;
    const isLive = async (jobId: string) => {
      const record = await records.get(jobId);
      return record !== undefined && !lifecycle.isTerminal(record);
    };
    const freed = await limits.reconcile(isLive, 60_000, 1000);
    expect(freed).toBeGreaterThanOrEqual(1);
    expect(await limits.reconcile(isLive, 60_000, 1000)).toBeUndefined(); // the other pass holds the lock for its interval
    expect((await submit(replicas[0]!, 'single')).status).toBe(202);
  });

  it('refuses a revoked key on every replica within seconds', async () => {
    expect((await fetch(`${replicas[0]!.url}/api/jobs/${'x'.repeat(22)}`, { headers: bearer('bob') })).status).toBe(404);
    await new KeyStore(new ObjectStore(replicas[0]!.config), PEPPER).revoke(ids.bob!);
    for (const api of replicas) {
      await waitFor(async () => {
        const response = await fetch(`${api.url}/api/jobs/${'x'.repeat(22)}`, { headers: bearer('bob') });
        return response.status === 401 ? true : undefined;
      }, 10_000, 'the revocation');
    }
  });
});

describe('limits with Redis down', () => {
  for (const policy of ['open', 'closed'] as const) {
    it(`fail ${policy}, and /readyz says so`, async () => {
      const api = await startTestApi({ ...shared, REDIS_URL: 'redis://127.0.0.1:1', LIMITS_WHEN_REDIS_DOWN: policy });
      try {
        const ready = await fetch(`${api.url}/readyz`);
        expect(ready.status).toBe(policy === 'open' ? 200 : 503);
        expect((await json(ready)).checks.limits).toMatch(new RegExp(`unreachable.*fail ${policy}`));
        const response = await submit(api, 'capped');
        expect(response.status).toBe(policy === 'open' ? 202 : 503);
      } finally {
        await api.close();
      }
    });
  }
});

describe('an API that must have keys', () => {
  it('refuses to start beyond loopback without them, and says how to fix it', async () => {
    const port = await freePort();
    const env = { ...shared, AUTH: '', S3_BUCKET: uniqueName('nokeys'), API_HOST: '0.0.0.0', API_PORT: String(port), MODEL_NAMES_FILE: modelNamesFile(), LOG_LEVEL: 'warn' };
    const api = new ChildService('api', process.execPath, ['--import', 'tsx', 'api/main.ts'], { env });
    await api.exited;
    expect(api.child.exitCode).not.toBe(0);
    expect(api.log).toMatch(/npm run keys -- create/);
  }, 60_000);
});
