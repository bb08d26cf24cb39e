// Cancel, results and models against the real Kafka and MinIO. The consumer is another
// component, so the tests play its part by writing records and outputs through RecordStore.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JobEvent, type JobRecord } from '../../common/jobs.js';
import { defaultsFor, imageLimitsFor, PARAMS, rulesFor } from '../../common/params.js';
import { jobKeys } from '../../common/storage.js';
import { consumerGroup, eventsTopic, jobTopic } from '../../common/topics.js';
import { json, pngImage, postJob, readTopic, startTestApi, type TestApi } from '../helpers/api.js';

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi();
});
afterAll(() => api?.close());

async function newJob(priority = 'normal'): Promise<string> {
  const response = await postJob(api.url, { query: { model_name: 'tiny', prompt: 'a lighthouse', priority } });
  expect(response.status).toBe(202);
  return (await json(response)).id;
}

/** What the consumer would write; the API only reads it. */
const setRecord = (id: string, change: Partial<JobRecord>) => api.services.records.update(id, (record) => ({ ...record, ...change }));

async function eventsOf(id: string, until: (types: string[]) => boolean): Promise<string[]> {
  const types = (messages: { key: string; value: string }[]) =>
    messages.filter((m) => m.key === id).map((m) => JobEvent.parse(JSON.parse(m.value)).type);
  return types(await readTopic(api.config, eventsTopic(api.config.TOPIC_PREFIX), (read) => until(types(read))));
}

describe('DELETE /api/jobs/{id}', () => {
  it('cancels a queued job at once, publishes canceled, and answers 200 again when repeated', async () => {
    const id = await newJob();
    const response = await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE' });
    expect(response.status).toBe(200);
    expect(await json(response)).toMatchObject({ id, status: 'canceled', finished_at: expect.any(String) });
    expect((await api.services.records.get(id))?.status).toBe('canceled');
    expect(await eventsOf(id, (types) => types.includes('canceled'))).toEqual(['queued', 'canceled']);

    const again = await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE' });
    expect(again.status).toBe(200);
    expect((await json(again)).status).toBe('canceled');
  });

  it('asks a running job to stop: 202, cancel_requested, and a cancel_requested event', async () => {
    const id = await newJob();
    await setRecord(id, { status: 'running', started_at: new Date().toISOString(), attempts: 1, progress: { step: 2, total: 10 } });
    const response = await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE' });
    expect(response.status).toBe(202);
    expect(await json(response)).toMatchObject({ status: 'running', cancel_requested: true, progress: { step: 2, total: 10 } });
    expect((await api.services.records.get(id))?.cancel_requested).toBe(true);
    expect(await eventsOf(id, (types) => types.includes('cancel_requested'))).toEqual(['queued', 'cancel_requested']);
  });

  it('answers 409 for a finished job and 404 for an unknown one', async () => {
    const id = await newJob();
    await setRecord(id, { status: 'succeeded', finished_at: new Date().toISOString() });
    const response = await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE' });
    expect(response.status).toBe(409);
    expect((await json(response)).error.code).toBe('job_finished');
    expect((await fetch(`${api.url}/api/jobs/AAAAAAAAAAAAAAAAAAAAAA`, { method: 'DELETE' })).status).toBe(404);
  });
});

describe('GET /api/results/{id}', () => {
  it('answers 202 with Retry-After while queued or running', async () => {
    const id = await newJob();
    const queued = await fetch(`${api.url}/api/results/${id}`);
    expect(queued.status).toBe(202);
    expect(queued.headers.get('retry-after')).toBe('2');
    expect(await json(queued)).toMatchObject({ id, status: 'queued' });

    await setRecord(id, { status: 'running' });
    const running = await fetch(`${api.url}/api/results/${id}`);
    expect(running.status).toBe(202);
    expect(running.headers.get('retry-after')).toBe('1');
  });

  it('answers 409 with the reason when the job failed or was canceled', async () => {
    const failed = await newJob();
    await setRecord(failed, { status: 'failed', error: { code: 'runner_crashed', message: 'the runner ran out of memory' } });
    const response = await fetch(`${api.url}/api/results/${failed}`);
    expect(response.status).toBe(409);
    expect((await json(response)).error).toEqual({ code: 'job_failed', message: 'the job failed: the runner ran out of memory', request_id: expect.any(String) });

    const canceled = await newJob();
    await fetch(`${api.url}/api/jobs/${canceled}`, { method: 'DELETE' });
    const second = await fetch(`${api.url}/api/results/${canceled}`);
    expect(second.status).toBe(409);
    expect((await json(second)).error.code).toBe('job_canceled');
  });

  it('answers 404 for an unknown job', async () => {
    expect((await fetch(`${api.url}/api/results/AAAAAAAAAAAAAAAAAAAAAA`)).status).toBe(404);
    expect((await fetch(`${api.url}/api/results/nope`)).status).toBe(404);
  });

  it('streams the output once succeeded, cacheable forever by the client only, with 304 for a matching ETag', async () => {
    const id = await newJob();
    const output = await pngImage(64, 48, { r: 250, g: 10, b: 10 });
    await api.services.store.put(jobKeys(id).output, output, 'image/png');
    await setRecord(id, { status: 'succeeded', output_key: jobKeys(id).output, finished_at: new Date().toISOString() });

    const response = await fetch(`${api.url}/api/results/${id}`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/png');
    // private: results belong to whoever submitted the job; no shared cache may keep one.
    expect(response.headers.get('cache-control')).toBe('private, max-age=31536000, immutable');
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    expect(Buffer.from(await response.arrayBuffer())).toEqual(output);
    const etag = response.headers.get('etag')!;
    expect(etag).toMatch(/^".+"$/);

    const cached = await fetch(`${api.url}/api/results/${id}`, { headers: { 'If-None-Match': etag } });
    expect(cached.status).toBe(304);
    expect(cached.headers.get('etag')).toBe(etag);
  });
});

/** Plays the model's consumer: reads `count` messages of `topic` in its group and commits past them. */
async function consumeAndCommit(topic: string, count: number): Promise<void> {
  const consumer = api.services.kafka.consumer({ groupId: consumerGroup(api.config.TOPIC_PREFIX, 'tiny'), maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  let seen = 0;
  await new Promise<void>((resolve) => {
    void consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }]);
        if (++seen === count) resolve();
      },
    });
  });
  await consumer.disconnect();
}

describe('GET /api/models', () => {
  it('lists the models with their queue depth per priority, from the consumer group’s lag', async () => {
    const depth = async () => {
      const response = await fetch(`${api.url}/api/models`);
      expect(response.status).toBe(200);
      const { models } = await json<{ models: { name: string; queue_depth: Record<string, number> }[] }>(response);
      expect(models.map((model) => model.name)).toEqual(['tiny']);
      return models[0]!.queue_depth;
    };
    const pastCache = () => new Promise((resolve) => setTimeout(resolve, 1100));
    const before = await depth();

    await newJob('high');
    await newJob('high');
    await newJob('low');
    await pastCache();
    const after = await depth();
    expect(after.high).toBe(before.high! + 2);
    expect(after.low).toBe(before.low! + 1);
    expect(after.total).toBe(after.high! + after.normal! + after.low!);

    await consumeAndCommit(jobTopic(api.config.TOPIC_PREFIX, 'tiny', 'high'), after.high!);
    await pastCache();
    const committed = await depth();
    expect(committed.high).toBe(0);
    expect(committed.low).toBe(after.low);
  });

  it('gives each model its parameter defaults and image limits, from common/params.json within the deployment’s', async () => {
    const { models } = await json(await fetch(`${api.url}/api/models`));
    expect(models[0]).toMatchObject({
      name: 'tiny',
      defaults: { ...defaultsFor(rulesFor('tiny', 'sd')) },
      image: { min_side: PARAMS.image.min_side, max_side: Math.min(imageLimitsFor('tiny').max_side, api.config.MAX_IMAGE_SIDE), max_pixels: imageLimitsFor('tiny').max_pixels },
    });
    expect(models[0].defaults.steps).not.toBe(PARAMS.steps.default); // tiny has its own
  });
});
