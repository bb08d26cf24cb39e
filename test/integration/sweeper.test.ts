// The storage sweep's cost follows what is due, not what is stored: an idle pass over a bucket
// of 1,000 ended jobs and over one of 10,000 makes the same requests; and of two replicas only
// the lease holder sweeps. Real MinIO; the jobs are written directly (record and sweep entry,
// as intake and an earlier pass leave them).
import pLimit from 'p-limit';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dueKey, Sweeper } from '../../api/sweeper.js';
import { IdempotencyStore } from '../../api/idempotency.js';
import { newJobId } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';
import { createLogger } from '../../common/logger.js';
import { RecordStore } from '../../common/records.js';
import { jobKeys, ObjectStore } from '../../common/storage.js';
import { TenantStore } from '../../common/tenants.js';
import { testConfig, uniqueName } from '../helpers/env.js';

const DAY_MS = 24 * 3600 * 1000;
const params = { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 };

interface Counted {
  store: ObjectStore;
  requests: Record<string, number>;
}

/** An ObjectStore of `bucket` that counts its requests by kind. */
function countedStore(bucket: string): Counted {
  const store = new ObjectStore(testConfig({ S3_BUCKET: bucket }));
  const requests: Record<string, number> = {};
  for (const method of ['get', 'put', 'putIfAbsent', 'putIfMatch', 'delete', 'list'] as const) {
    const original = (store[method] as (...args: unknown[]) => unknown).bind(store);
    (store as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
      requests[method] = (requests[method] ?? 0) + 1;
      return original(...args);
    };
  }
  return { store, requests };
}

function sweeperOf(store: ObjectStore): Sweeper {
  return new Sweeper({
    store,
    records: new RecordStore(store),
    claims: new IdempotencyStore(store, 'sweep-test'),
    tenants: new TenantStore(store),
    log: createLogger('sweeper-test', 'silent'),
    intervalMs: 60_000,
    graceMs: 1000,
    retentionDays: 7,
    writeTimeoutMs: 5000,
  });
}

/** `count` ended jobs, each with its record and its entry at its retention's end (a week on). */
async function seed(store: ObjectStore, count: number): Promise<void> {
  const limit = pLimit(64);
  await Promise.all(
    Array.from({ length: count }, () =>
      limit(async () => {
        const id = newJobId();
        const queued = lifecycle.queued({ id, model_name: 'tiny', priority: 'normal', params, width: 64, height: 64, input_key: jobKeys(id).input, idempotency: null }).record;
        const ended = lifecycle.cancel(queued)!.record;
        await store.put(jobKeys(id).record, JSON.stringify(ended), 'application/json');
        await store.put(dueKey(Date.parse(ended.created_at) + 7 * DAY_MS, id), '{}', 'application/json');
      }),
    ),
  );
}

/** One pass: the requests it made and its CPU time (ms). */
async function idlePass(counted: Counted, sweeper: Sweeper) {
  for (const key of Object.keys(counted.requests)) delete counted.requests[key];
  const cpu = process.cpuUsage();
  const count = await sweeper.sweep();
  const used = process.cpuUsage(cpu);
  return { count, requests: { ...counted.requests }, cpu_ms: (used.user + used.system) / 1000 };
}

let small: Counted & { sweeper: Sweeper };
let large: Counted & { sweeper: Sweeper };

beforeAll(async () => {
  const counted = [countedStore(uniqueName('sweep1k')), countedStore(uniqueName('sweep10k'))];
  [small, large] = counted.map((c) => ({ ...c, sweeper: sweeperOf(c.store) })) as [typeof small, typeof large];
  for (const { store, sweeper } of [small, large]) {
    await store.ensureBucket();
    await sweeper.sweep(); // an empty bucket: the index starts here, and this replica holds the lease
  }
  await seed(small.store, 1000);
  await seed(large.store, 10_000);
}, 180_000);

afterAll(() => {
  small?.store.close();
  large?.store.close();
});

describe('an idle sweep', () => {
  it('makes the same requests over 1,000 stored jobs as over 10,000, and reads no record', async () => {
    const passes = [];
    for (const counted of [small, large]) passes.push(await idlePass(counted, counted.sweeper));
    console.log(`[sweep] idle pass, 1k jobs: ${JSON.stringify(passes[0])}; 10k jobs: ${JSON.stringify(passes[1])}`);
    expect(passes[0]!.requests).toEqual(passes[1]!.requests);
    expect(passes[1]!.count).toEqual({ orphans: 0, expired: 0, checked: 0 });
    // The lease (read, renewed), the index's state, the tenants' retentions and the due entries: no record.
    expect(passes[1]!.requests).toEqual({ get: 2, putIfMatch: 1, list: 2 });
  });

  it('groups the first checks of intakes that arrive together into shared entries, and checks each job of them', async () => {
    const counted = countedStore(uniqueName('sweepgroup'));
    await counted.store.ensureBucket();
    const sweeper = sweeperOf(counted.store);
    const ids = Array.from({ length: 20 }, () => newJobId());
    await Promise.all(ids.map((id) => sweeper.scheduleFirstCheck(id)));
    const writes = counted.requests.put ?? 0;
    console.log(`[sweep] 20 intakes at once: ${writes} entry writes`);
    expect(writes).toBeLessThan(20);
    await new Promise((resolve) => setTimeout(resolve, 1100)); // their grace (1 s here)
    const count = await sweeper.sweep();
    expect(count).toMatchObject({ checked: 20, orphans: 20 }); // none of them got a record
    counted.store.close();
  });

  it('runs on one replica at a time: the other finds the lease held and does nothing', async () => {
    const { store } = countedStore(uniqueName('sweeplease'));
    await store.ensureBucket();
    const planted = newJobId();
    await store.put(jobKeys(planted).input, Buffer.from('orphan'), 'image/png');
    await store.put(dueKey(Date.now() - 1, planted), '{}', 'application/json');
    const [first, second] = [sweeperOf(store), sweeperOf(store)];
    const counts = [await first.sweep(), await second.sweep()];
    expect(counts).toEqual([{ orphans: 1, expired: 0, checked: 1 }, { orphans: 0, expired: 0, checked: 0 }]);
    expect(await store.getBytes(jobKeys(planted).input)).toBeUndefined();
    store.close();
  });
});
