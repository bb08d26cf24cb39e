// Retention with a short expiry: an ended job's input and output are deleted, its record says
// `expired`, its result answers 410 and its Idempotency-Key is free again; a tenant that keeps
// its jobs longer keeps them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyStore } from '../../common/keys.js';
import { ObjectStore, jobKeys } from '../../common/storage.js';
import { TenantStore } from '../../common/tenants.js';
import { json, openEventStream, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { waitFor } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';

const PEPPER = 'retention-pepper-0123456789';
let api: TestApi;
let store: ObjectStore;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  // About 3 s of retention, swept every half second; a job is first looked at a second after its intake.
  const overrides = {
    AUTH: 'on',
    AUTH_PEPPER: PEPPER,
    S3_BUCKET: uniqueName('retention'),
    RETENTION_DAYS: String(3 / 86_400),
    SWEEP_INTERVAL_MS: '500',
    ORPHAN_GRACE_MS: '1000',
  };
  api = await startTestApi(overrides);
  store = new ObjectStore(api.config);
  const keys = new KeyStore(store, PEPPER);
  for (const tenant of ['brief', 'keeper']) {
    tokens[tenant] = (await keys.create({ tenant, name: tenant, role: 'user', limits: { rate: null, concurrency: null } })).token;
  }
  await new TenantStore(store).setRetention('keeper', 365);
}, 120_000);

afterAll(() => api?.close());

async function endedJob(tenant: string, idempotencyKey: string): Promise<string> {
  const headers = { Authorization: `Bearer ${tokens[tenant]}`, 'Idempotency-Key': idempotencyKey };
  const response = await postJob(api.url, { headers });
  expect(response.status).toBe(202);
  const { id } = await json(response);
  await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE', headers });
  return id;
}

describe('retention', () => {
  it('expires an ended job past its retention, and keeps a tenant’s that keeps them longer', async () => {
    const key = uniqueName('idem');
    const brief = await endedJob('brief', key);
    const kept = await endedJob('keeper', uniqueName('idem'));
    await store.put(jobKeys(brief).output, Buffer.from('stand-in output'), 'image/png');
    const auth = { Authorization: `Bearer ${tokens.brief}` };

    const record = await waitFor(async () => {
      const current = await api.services.records.get(brief);
      return current?.status === 'expired' ? current : undefined;
    }, 30_000, 'the job to expire');
    expect(record.output_key).toBeNull();
    expect(await store.getBytes(jobKeys(brief).input)).toBeUndefined();
    expect(await store.getBytes(jobKeys(brief).output)).toBeUndefined();
    // It left its tenant's lists and everyone's; the kept job is still in all four.
    const entries = async (prefix: string) => (await store.listPage(prefix, {})).keys;
    expect([...(await entries('list/brief/')), ...(await entries('ended/brief/'))]).toEqual([]);
    for (const list of ['list/keeper/', 'ended/keeper/canceled/', 'list/~all/', 'ended/~all/']) {
      expect((await entries(list)).map((k) => k.includes(kept)), list).toEqual([true]);
    }

    const result = await fetch(`${api.url}/api/results/${brief}`, { headers: auth });
    expect(result.status).toBe(410);
    expect((await json(result)).error.code).toBe('job_expired');
    expect((await json(await fetch(`${api.url}/api/jobs/${brief}`, { headers: auth }))).status).toBe('expired');
    const cancel = await fetch(`${api.url}/api/jobs/${brief}`, { method: 'DELETE', headers: auth });
    expect({ status: cancel.status, code: (await json(cancel)).error?.code }).toEqual({ status: 410, code: 'job_expired' });
    const stream = await openEventStream(`${api.url}/api/jobs/${brief}/events`, auth);
    expect(JSON.parse((await stream.next())!.data).status).toBe('expired');
    expect(await stream.next()).toBeUndefined();

    // Its Idempotency-Key expired with it: the same request makes a new job.
    const again = await postJob(api.url, { headers: { ...auth, 'Idempotency-Key': key } });
    expect((await json(again)).id).not.toBe(brief);

    expect((await api.services.records.get(kept))?.status).toBe('canceled');
    expect(await store.getBytes(jobKeys(kept).input)).toBeDefined();
  }, 60_000);
});
