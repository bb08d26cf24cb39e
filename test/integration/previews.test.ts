// Live previews through the whole system: a job submitted with preview_every gets `preview`
// events on its stream whose preview_url serves a small WebP while it runs; once it ends the
// preview is gone (404, and deleted from the bucket). A model of a family without previews refuses the field.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobKeys } from '../../common/storage.js';
import { json, openEventStream, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { ConsumerProcess, pngOf, waitForStatus } from '../helpers/consumer.js';

let api: TestApi;
let consumer: ConsumerProcess;

beforeAll(async () => {
  api = await startTestApi();
  consumer = await new ConsumerProcess({ TOPIC_PREFIX: api.config.TOPIC_PREFIX, IDLE_UNLOAD_MS: '0' }).start();
  await consumer.ready();
}, 120_000);

afterAll(async () => {
  await consumer?.stop('SIGKILL');
  await api?.close();
});

describe('live previews', () => {
  it('streams preview events whose image is served while the job runs, and deleted when it ends', async () => {
    const query = { model_name: 'tiny', prompt: 'a fox', steps: '60', strength: '1', preview_every: '10' };
    const response = await postJob(api.url, { image: await pngOf(256, 256), query });
    expect(response.status).toBe(202);
    const { id, events_url } = await json(response);
    const stream = await openEventStream(events_url);
    const previews: { step: number; total: number; preview_url: string }[] = [];
    const served: { status: number; type: string | null; bytes: number }[] = [];
    for (;;) {
      const event = await stream.next(90_000);
      if (!event || ['succeeded', 'failed', 'canceled'].includes(event.event ?? '')) break;
      if (event.event !== 'preview') continue;
      const data = JSON.parse(event.data);
      previews.push(data);
      if (served.length === 0) {
        const image = await fetch(data.preview_url);
        served.push({ status: image.status, type: image.headers.get('content-type'), bytes: (await image.arrayBuffer()).byteLength });
      }
    }
    stream.close();
    const record = await waitForStatus(api.services.records, id, ['succeeded', 'failed'], 30_000);
    expect(record.status).toBe('succeeded');
    expect(previews.length).toBeGreaterThan(0);
    for (const preview of previews) {
      expect(preview.step % 10).toBe(0);
      expect(preview.step).toBeLessThan(preview.total);
      expect(preview.preview_url).toBe(`${api.url}/api/jobs/${id}/preview`);
    }
    expect(served[0]).toMatchObject({ status: 200, type: 'image/webp' });
    expect(served[0]!.bytes).toBeGreaterThan(0);
    console.log(`[previews] ${previews.length} preview events for 60 steps at preview_every=10; the first ${served[0]!.bytes} bytes`);
    const after = await fetch(`${api.url}/api/jobs/${id}/preview`);
    expect({ status: after.status, code: (await json(after)).error.code }).toEqual({ status: 404, code: 'no_preview' });
    expect(await api.services.store.getBytes(jobKeys(id).preview)).toBeUndefined();
    const view = await json(await fetch(`${api.url}/api/jobs/${id}`));
    expect(view.params.preview_every).toBe(10);
  }, 120_000);

  it('a job without preview_every gets no preview events and no preview', async () => {
    const response = await postJob(api.url, { image: await pngOf(64, 64), query: { model_name: 'tiny', prompt: 'plain' } });
    const { id, events_url } = await json(response);
    const stream = await openEventStream(events_url);
    const types: string[] = [];
    for (;;) {
      const event = await stream.next(60_000);
      if (!event) break;
      types.push(event.event ?? '');
      if (['succeeded', 'failed'].includes(event.event ?? '')) break;
    }
    stream.close();
    expect(types).not.toContain('preview');
    expect(await api.services.store.getBytes(jobKeys(id).preview)).toBeUndefined();
  }, 90_000);
});
