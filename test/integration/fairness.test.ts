// One costly job must not hold a model: behind a 1024x1024 job of 50 steps (tens of seconds on
// a CPU) and a second one filling the runner, a 64x64 high-priority job is handed over at once,
// overtakes at the running job's next step and succeeds while that job still runs. The real
// consumer and tiny runner; the figures are printed, not asserted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Consumer } from '../../consumer/consumer.js';
import { createKafka } from '../../common/kafka.js';
import { json, pngImage, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { startTestConsumer, waitFor, waitForStatus } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';
import { followEvents } from '../helpers/faults.js';

let api: TestApi;
let consumer: Consumer;

beforeAll(async () => {
  api = await startTestApi();
  // One job a batch: two costly jobs fill the runner (capacity: twice the batch).
  consumer = await startTestConsumer({ ...api.config, RUNNER_MAX_BATCH: 1, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 1000 });
}, 180_000);
afterAll(async () => {
  await consumer?.stop();
  await api?.close();
});

describe('a high-priority 64x64 job behind a 1024x1024 one', () => {
  it('overtakes it at its next step and succeeds while it still runs', async () => {
    const events = await followEvents(createKafka(api.config, uniqueName('fairness')), api.config);
    const big = await pngImage(1024, 1024);
    const costly = { model_name: 'tiny', prompt: 'costly', steps: '50', strength: '1', priority: 'low' };
    const first = await json(await postJob(api.url, { image: big, query: { ...costly, seed: '1' } }));
    const second = await json(await postJob(api.url, { image: big, query: { ...costly, seed: '2' } }));
    await waitFor(async () => (events.of(first.id, 'progress').some((e) => e.step! >= 2) ? true : undefined), 120_000, 'the costly job to run');

    const sent = Date.now();
    const small = await json(await postJob(api.url, { image: await pngImage(64, 64), query: { model_name: 'tiny', prompt: 'small', steps: '4', priority: 'high' } }));
    const done = await waitForStatus(api.services.records, small.id, ['succeeded', 'failed'], 60_000);
    const latencyMs = Date.now() - sent;
    const costlyNow = await api.services.records.get(first.id);
    const steps = events.of(first.id, 'progress').map((e) => Date.parse(e.at));
    const stepMs = steps.length > 1 ? (steps.at(-1)! - steps[0]!) / (steps.length - 1) : NaN;
    console.log(
      `[fairness] 64x64 high behind 1024x1024 x 50 steps: done in ${latencyMs} ms (queue ${done.timings?.queue_s} s, run ${done.timings?.run_s} s); ` +
        `the costly job's step ${Math.round(stepMs)} ms, it was at step ${costlyNow?.progress?.step ?? '?'} of 50`,
    );
    expect(done.status).toBe('succeeded');
    expect(costlyNow).toMatchObject({ status: 'running' }); // still running: overtaken, not waited for
    expect((await api.services.records.get(second.id))?.status).toBe('queued'); // handed over, not yet started
    for (const { id } of [first, second]) await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE' });
    await waitForStatus(api.services.records, first.id, ['canceled'], 60_000);
    await waitForStatus(api.services.records, second.id, ['canceled'], 60_000);
    await events.stop();
  }, 300_000);
});
