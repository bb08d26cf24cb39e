// Remote workers: runners that dial in over a WebSocket with worker tokens, verified
// results, strikes and eviction. Every worker is the tiny model on this machine's CPU, on
// 127.0.0.1; the liar is the same runner on the test-only `liar:` source (inverted images).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobRecord } from '../../common/jobs.js';
import { jobKeys } from '../../common/storage.js';
import { WorkerStore } from '../../common/workers.js';
import type { Consumer } from '../../consumer/consumer.js';
import { psnr } from '../../consumer/remote/compare.js';
import { json, pngImage, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { startTestConsumer, waitFor, waitForStatus } from '../helpers/consumer.js';
import { newWorker, removeWorker, WorkerProcess } from '../helpers/workers.js';

const ENDED = ['succeeded', 'failed', 'canceled'];

/** Every job the same: honest workers give the same pixels for it, the liar does not. */
async function submit(api: TestApi, steps = 4, size = 64): Promise<string> {
  const response = await postJob(api.url, {
    image: await pngImage(size, size),
    query: { model_name: 'tiny', prompt: 'verify', seed: '7', steps: String(steps), strength: '0.6' },
  });
  expect(response.status).toBe(202);
  return (await json(response)).id as string;
}

async function startWorkers(api: TestApi, consumer: Consumer, names: string[], liars: string[] = []) {
  return Promise.all(
    names.map(async (name) => {
      const { id, token } = await newWorker(api.services.store, name);
      const process = new WorkerProcess(consumer.gatewayUrl()!, token, liars.includes(name) ? ['--source', 'liar:'] : []).start();
      return { name, id, token, process };
    }),
  );
}

const gatewayConfig = (api: TestApi, overrides: Record<string, unknown> = {}) => ({
  ...api.config,
  RUNNER_LOCAL: 'off' as const,
  WORKER_GATEWAY: 'on' as const,
  WORKER_GATEWAY_PORT: 0,
  IDLE_UNLOAD_MS: 0,
  SHUTDOWN_GRACE_MS: 1000,
  ...overrides,
});

/** For one describe: an API, a consumer serving `tiny verify=<policy>`, and workers honest-1, honest-2 and liar. */
function withALiar(policy: string) {
  const setup = {} as { api: TestApi; consumer: Consumer; workers: Awaited<ReturnType<typeof startWorkers>> };
  beforeAll(async () => {
    setup.api = await startTestApi();
    setup.consumer = await startTestConsumer(gatewayConfig(setup.api, { WORKER_MAX_STRIKES: 2 }), `tiny verify=${policy}\n`);
    setup.workers = await startWorkers(setup.api, setup.consumer, ['honest-1', 'honest-2', 'liar'], ['liar']);
    await Promise.all(setup.workers.map((w) => w.process.connected()));
  }, 180_000);
  afterAll(async () => {
    for (const w of setup.workers ?? []) w.process.kill();
    for (const w of setup.workers ?? []) await removeWorker(setup.api.services.store, w.id);
    await setup.consumer?.stop();
    await setup.api?.close();
  });
  return setup;
}

describe('all:2 with two honest workers and one liar', () => {
  const setup = withALiar('all:2');

  it('shows only honest results, evicts the liar after its strikes, and redoes what it touched', async () => {
    const { api, workers } = setup;
    const [honest1, honest2, liar] = workers;
    const ids = await Promise.all(Array.from({ length: 12 }, () => submit(api)));
    const records: JobRecord[] = [];
    for (const id of ids) records.push(await waitForStatus(api.services.records, id, ENDED, 180_000));

    const outputs = await Promise.all(ids.map(async (id) => (await api.services.store.getBytes(jobKeys(id).output))!));
    const honestIds = [honest1!.id, honest2!.id];
    for (const [i, record] of records.entries()) {
      expect(record).toMatchObject({ status: 'succeeded', attempts: 1, verification: { policy: 'all:2', state: 'verified' } });
      expect(honestIds).toContain(record.worker);
      // Same job, same seed, same CPU: every honest output has the same pixels.
      expect(await psnr(outputs[0]!, outputs[i]!)).toBe(Infinity);
    }
    const outvoted = records.filter((r) => r.verification?.outvoted.includes(liar!.id)).length;

    const token = await new WorkerStore(api.services.store).get(liar!.id);
    expect(token?.evicted).not.toBeNull();
    expect(token!.strikes.length).toBeGreaterThanOrEqual(2);
    // Its reconnection is refused: the runner gives up with exit code 3.
    expect(await liar!.process.exited()).toBe(3);

    const listed = await waitFor(async () => {
      const body = await json<{ workers: { id: string; state: string; jobs_done: number }[] }>(await fetch(`${api.url}/api/workers`));
      const states = Object.fromEntries(body.workers.map((w) => [w.id, w.state]));
      return states[liar!.id] === 'evicted' && states[honest1!.id] === 'connected' ? body.workers : undefined;
    }, 30_000, 'GET /api/workers to show the eviction');
    expect(listed.find((w) => w.id === honest1!.id)!.jobs_done).toBeGreaterThan(0);
    console.log(`[workers] all:2: 12 jobs, all honest; liar outvoted on ${outvoted}, evicted with ${token!.strikes.length} strikes`);
  }, 300_000);
});

describe('spot:0.2 with two honest workers and one liar', () => {
  const setup = withALiar('spot:0.2');

  // A job is checked with probability 0.2, and a check involves the liar when it is one of the
  // two workers picked (about 2 in 3): a strike every 1 / (0.2 * 2/3) = 7.5 jobs, so 2 strikes
  // in about 15 jobs. 150 jobs without 2 strikes has a probability below 1e-7.
  it('catches the liar within a bounded number of jobs and lists its unchecked results', async () => {
    const { api, workers } = setup;
    const [, , liar] = workers;
    const store = new WorkerStore(api.services.store);
    let jobs = 0;
    let records: JobRecord[] = [];
    while (!(await store.get(liar!.id))?.evicted && jobs < 150) {
      const ids = await Promise.all(Array.from({ length: 5 }, () => submit(api)));
      jobs += ids.length;
      records = records.concat(await Promise.all(ids.map((id) => waitForStatus(api.services.records, id, ENDED, 120_000))));
    }
    const token = await store.get(liar!.id);
    expect(token?.evicted).not.toBeNull();
    const checked = records.filter((r) => r.verification?.state === 'verified').length;
    const unverifiedFromLiar = records.filter((r) => r.worker === liar!.id && r.verification?.state === 'single').map((r) => r.id);
    // What the liar delivered unchecked is listed for an operator.
    for (const id of unverifiedFromLiar) expect(token!.evicted!.unverified_jobs).toContain(id);
    for (const record of records) expect(record.status).toBe('succeeded');
    console.log(`[workers] spot:0.2: liar evicted after ${jobs} jobs (${checked} checked; ${unverifiedFromLiar.length} of its results went out unchecked and are listed)`);
    expect(await liar!.process.exited()).toBe(3);
  }, 600_000);
});

describe('all:2 with fewer workers than the check needs', () => {
  let api: TestApi;
  let consumer: Consumer;
  let workers: Awaited<ReturnType<typeof startWorkers>> = [];
  beforeAll(async () => {
    api = await startTestApi();
    consumer = await startTestConsumer(gatewayConfig(api), 'tiny verify=all:2\n');
  }, 180_000);
  afterAll(async () => {
    for (const w of workers) w.process.kill();
    for (const w of workers) await removeWorker(api.services.store, w.id);
    await consumer?.stop();
    await api?.close();
  });

  it('waits, and says so in the job status, until a second worker connects', async () => {
    workers = await startWorkers(api, consumer, ['first']);
    await workers[0]!.process.connected();
    const id = await submit(api);
    const waiting = await waitFor(async () => {
      const view = await json(await fetch(`${api.url}/api/jobs/${id}`));
      return view.verification?.state === 'waiting_for_workers' ? view : undefined;
    }, 60_000, 'the job to say it waits for workers');
    // Not started anywhere yet: queued, and the status says what it waits for.
    expect(waiting).toMatchObject({ status: 'queued', verification: { policy: 'all:2', state: 'waiting_for_workers' } });
    workers.push(...(await startWorkers(api, consumer, ['second'])));
    await waitForStatus(api.services.records, id, ENDED, 120_000);
    const view = await json(await fetch(`${api.url}/api/jobs/${id}`));
    expect(view).toMatchObject({ status: 'succeeded', verification: { state: 'verified' } });
    expect(workers.map((w) => w.id)).toContain(view.worker);
    expect([...view.verification.workers].sort()).toEqual(workers.map((w) => w.id).sort());
  }, 240_000);
});
