// Deadlines: start_by (a field) and Cancel-After (a header) over HTTP. A job not started in time
// ends aborted without reaching a runner, also when nobody but a reader looks at it; one still
// running at its Cancel-After is canceled at its next step with the deadline as its reason.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobTopic, PRIORITIES } from '../../common/topics.js';
import { json, pngImage, postJob, startTestApi, topicSize, type TestApi } from '../helpers/api.js';
import { ConsumerProcess, pngOf, waitForStatus } from '../helpers/consumer.js';

let api: TestApi;
const consumers: ConsumerProcess[] = [];

beforeAll(async () => {
  api = await startTestApi();
});

afterAll(async () => {
  for (const consumer of consumers) await consumer.stop('SIGKILL');
  await api?.close();
});

const queued = async () => {
  let total = 0;
  for (const priority of PRIORITIES) total += await topicSize(api.services.admin, jobTopic(api.config.TOPIC_PREFIX, 'tiny', priority));
  return total;
};

describe('deadlines', () => {
  it('refuses a deadline that has passed (422) or is malformed (400), naming the field, and enqueues nothing', async () => {
    const image = await pngImage(64, 64);
    const post = (query: Record<string, string>, headers: Record<string, string> = {}) =>
      postJob(api.url, { image, query: { model_name: 'tiny', prompt: 'a fox', ...query }, headers });
    const cases: [Response, number, string, string][] = [
      [await post({ start_by: '2020-01-01T00:00:00Z' }), 422, 'deadline_passed', 'start_by'],
      [await post({ start_by: 'soon' }), 400, 'validation_error', 'start_by'],
      [await post({ start_by: '0' }), 400, 'validation_error', 'start_by'],
      [await post({ start_by: '999999' }), 400, 'validation_error', 'start_by'],
      [await post({}, { 'Cancel-After': '5 minutes' }), 400, 'validation_error', 'Cancel-After'],
      [await post({}, { 'Cancel-After': '200h' }), 400, 'validation_error', 'Cancel-After'],
    ];
    const seen = [];
    for (const [response] of cases) {
      const { error } = await json(response);
      seen.push({ status: response.status, code: error.code, field: error.field });
    }
    expect(seen).toEqual(cases.map(([, status, code, field]) => ({ status, code, field })));
    expect(await queued()).toBe(0);
  });

  it('records the deadlines of an accepted job, absolute and relative, in its view', async () => {
    const startBy = new Date(Date.now() + 3_600_000).toISOString();
    const before = Date.now();
    const response = await postJob(api.url, { image: await pngImage(64, 64), query: { model_name: 'tiny', prompt: 'a fox', start_by: startBy }, headers: { 'Cancel-After': '5m' } });
    expect(response.status).toBe(202);
    const view = await json(await fetch((await json(response)).status_url));
    expect(view.deadlines.start_by).toBe(startBy);
    const cancelAt = Date.parse(view.deadlines.cancel_at);
    expect(cancelAt - before).toBeGreaterThanOrEqual(300_000);
    expect(cancelAt - Date.now()).toBeLessThanOrEqual(300_000);
  });

  it('a job not started by its start_by reads as aborted, and its result answers 409 job_aborted', async () => {
    const response = await postJob(api.url, { image: await pngImage(64, 64), query: { model_name: 'tiny', prompt: 'late', start_by: '1' } });
    const { status_url, result_url } = await json(response);
    expect((await json(await fetch(status_url))).status).toBe('queued');
    await new Promise((resolve) => setTimeout(resolve, 1200));
    const view = await json(await fetch(status_url));
    expect(view).toMatchObject({ status: 'aborted', started_at: null, error: { code: 'deadline_exceeded' } });
    const result = await fetch(result_url);
    expect({ status: result.status, code: (await json(result)).error.code }).toEqual({ status: 409, code: 'job_aborted' });
  });

  it('a job still running at its Cancel-After is canceled at its next step', async () => {
    const consumer = await new ConsumerProcess({ TOPIC_PREFIX: api.config.TOPIC_PREFIX, IDLE_UNLOAD_MS: '0' }).start();
    consumers.push(consumer);
    await consumer.ready();
    // A first job warms the runner: the next one starts at once.
    const warm = await json(await postJob(api.url, { image: await pngImage(64, 64), query: { model_name: 'tiny', prompt: 'warm' } }));
    expect((await waitForStatus(api.services.records, warm.id, ['succeeded', 'failed'], 60_000)).status).toBe('succeeded');
    const started = Date.now();
    const query = { model_name: 'tiny', prompt: 'slow', steps: '150', strength: '1' };
    const response = await postJob(api.url, { image: await pngOf(256, 256), query, headers: { 'Cancel-After': '5s' } });
    const { id } = await json(response);
    const record = await waitForStatus(api.services.records, id, ['succeeded', 'failed', 'canceled', 'aborted'], 60_000);
    console.log(`[deadlines] Cancel-After 5s ended the job ${record.status} after ${Date.now() - started} ms, at step ${record.progress?.step}`);
    expect(record).toMatchObject({ status: 'canceled', error: { code: 'deadline_exceeded' } });
    expect(record.started_at).not.toBeNull();
    // Stopped part-way: 150 steps at 256x256 take far longer than 5 s on a CPU.
    expect(record.progress?.step ?? 0).toBeLessThan(150);
    expect(Date.parse(record.finished_at!) - Date.parse(record.deadlines!.cancel_at!)).toBeLessThan(5000);
  }, 120_000);
});
