// The whole system as a user meets it: the API and a consumer in-process (each as its
// composition root builds it), the `tiny` runner, real Kafka and MinIO. Submit, follow,
// fetch the result, cancel.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, openEventStream, pngImage, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import type { Consumer } from '../../consumer/consumer.js';
import { startTestConsumer, waitFor } from '../helpers/consumer.js';

let api: TestApi;
let consumer: Consumer;

beforeAll(async () => {
  api = await startTestApi();
  consumer = await startTestConsumer({ ...api.config, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 2000 });
}, 120_000);

afterAll(async () => {
  await consumer?.stop();
  await api?.close();
});

const statusOf = async (id: string) => (await json(await fetch(`${api.url}/api/jobs/${id}`))).status as string;

describe('end to end', () => {
  it('turns an upload into a result PNG of the normalised size, with live events', async () => {
    const response = await postJob(api.url, { image: await pngImage(100, 75), query: { model_name: 'tiny', prompt: 'a red fox', priority: 'high' } });
    expect(response.status).toBe(202);
    const job = await json(response);
    const events = await openEventStream(job.events_url);
    const seen: string[] = [];
    for (let event = await events.next(60_000); event; event = await events.next(60_000)) seen.push(event.event ?? 'message');
    expect(seen.at(-1)).toBe('succeeded');
    expect(seen).toContain('progress');

    const result = await fetch(job.result_url);
    expect(result.status).toBe(200);
    expect(result.headers.get('content-type')).toBe('image/png');
    const meta = await sharp(Buffer.from(await result.arrayBuffer())).metadata();
    expect([meta.width, meta.height]).toEqual([96, 72]); // sides brought down to multiples of 8
  });

  it('cancels a running job through DELETE: it stops at its next step and its result is 409', async () => {
    const form = { strength: '1', steps: '150' };
    const job = await json(await postJob(api.url, { image: await pngImage(256, 256), fields: form }));
    await waitFor(async () => {
      const view = await json(await fetch(job.status_url));
      return view.status === 'running' && (view.progress?.step ?? 0) > 0 ? true : undefined;
    }, 60_000, 'the job to make progress');
    const cancel = await fetch(job.status_url, { method: 'DELETE' });
    expect(cancel.status).toBe(202);
    await waitFor(async () => ((await statusOf(job.id)) === 'canceled' ? true : undefined), 30_000, 'cancellation');
    const result = await fetch(job.result_url);
    expect(result.status).toBe(409);
  });
});
