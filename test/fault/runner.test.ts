// Faults of the runner: a job that stalls its runner must not spend the
// attempts of the jobs in the runner beside it, and a cancel reaches a job stuck in a long step.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobRecord } from '../../common/jobs.js';
import { createKafka } from '../../common/kafka.js';
import type { Consumer } from '../../consumer/consumer.js';
import { json, noisePng, pngImage, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { startTestConsumer, waitFor, waitForStatus } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';
import { countOf, followEvents, report } from '../helpers/faults.js';
import { childPids } from '../helpers/processes.js';

const ENDED = ['succeeded', 'failed', 'canceled'];

/** The largest image tiny takes (common/params.json): a step of it takes seconds on a CPU. */
const culpritImage = () => noisePng(1024, 1024);

async function submit(api: TestApi, image: Buffer, seed: number, params: Record<string, string> = {}): Promise<string> {
  const query = { model_name: 'tiny', prompt: 'fault', seed: String(seed), steps: '10', strength: '0.6', ...params };
  const response = await postJob(api.url, { image, query });
  expect(response.status).toBe(202);
  return (await json(response)).id as string;
}

/** The runner processes this test process started (the in-process consumer's children). */
const runnerPids = () => childPids(process.pid, 'img2img_runner');

describe('a job that stalls its runner', () => {
  let api: TestApi;
  let consumer: Consumer;
  beforeAll(async () => {
    api = await startTestApi();
    // A stall is declared after 1 s without a frame (for a job this small; larger ones get longer).
    consumer = await startTestConsumer({ ...api.config, RUNNER_STALL_MS: 1000, RUNNER_MAX_BATCH: 4, MAX_ATTEMPTS: 3, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 1000 });
  }, 120_000);
  afterAll(async () => {
    for (const pid of runnerPids()) process.kill(pid, 'SIGCONT');
    await consumer?.stop();
    await api?.close();
  });

  it('fails only itself: the jobs beside it run again alone and succeed at their first attempt', async () => {
    const started = Date.now();
    const events = await followEvents(createKafka(api.config, uniqueName('fault')), api.config);
    // The culprit freezes its runner whenever it runs (SIGSTOP when its attempt starts): a hang of its own.
    const culprit = await submit(api, await pngImage(256, 256), 1, { steps: '150', strength: '1' });
    let frozen = 0;
    const freezer = setInterval(() => {
      const starts = events.of(culprit, 'started').length;
      if (starts <= frozen) return;
      frozen = starts;
      for (const pid of runnerPids()) process.kill(pid, 'SIGSTOP');
    }, 20);
    const innocents = await Promise.all([1, 2, 3, 4].map(async (seed) => submit(api, await pngImage(64, 48 + 8 * seed), seed)));
    const records: JobRecord[] = [];
    try {
      for (const id of [culprit, ...innocents]) records.push(await waitForStatus(api.services.records, id, ENDED, 240_000));
    } finally {
      clearInterval(freezer);
    }
    await events.stop();
    const count = countOf(5, records, events.events);
    report('runner stall', count, { seconds: Math.round((Date.now() - started) / 1000), culprit_attempts: records[0]!.attempts });

    expect(records[0]).toMatchObject({ status: 'failed', error: { code: 'runner_crashed' }, attempts: 3 });
    for (const innocent of records.slice(1)) expect(innocent).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect(count).toMatchObject({ lost: 0, duplicated: 0 });
  }, 300_000);
});

describe('a cancel', () => {
  let api: TestApi;
  let consumer: Consumer;
  beforeAll(async () => {
    api = await startTestApi();
    consumer = await startTestConsumer({ ...api.config, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 1000 });
  }, 120_000);
  afterAll(async () => {
    await consumer?.stop();
    await api?.close();
  });

  it('ends a job stuck in a long step without waiting for the step', async () => {
    const id = await submit(api, await culpritImage(), 7);
    await waitFor(async () => ((await api.services.records.get(id))?.status === 'running' ? true : undefined), 60_000, 'the job to start');
    const asked = Date.now();
    const response = await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE' });
    expect(response.status).toBe(202);
    const record = await waitForStatus(api.services.records, id, ENDED, 60_000);
    const seconds = (Date.parse(record.finished_at!) - asked) / 1000;
    report('cancel in a long step', countOf(1, [record], []), { seconds_to_canceled: seconds.toFixed(1), step: `${record.progress?.step ?? 0}/${record.progress?.total ?? '?'}` });
    expect(record.status).toBe('canceled');
    expect(record.output_key).toBeNull();
  }, 120_000);
});
