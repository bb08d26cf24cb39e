// POST /api/diffusion against the real Kafka and MinIO: the message is on its topic, the
// record and the normalised input are in storage, and Idempotency-Key holds.
import { randomUUID } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { JobEvent, JobMessage, JOB_ID } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';
import { RecordStore } from '../../common/records.js';
import { jobKeys, ObjectStore } from '../../common/storage.js';
import { eventsTopic, jobTopic } from '../../common/topics.js';
import { json, pngImage, postJob, readTopic, startTestApi, topicSize, type TestApi } from '../helpers/api.js';

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi();
});
afterAll(() => api?.close());

const topic = (priority: 'high' | 'normal' | 'low') => jobTopic(api.config.TOPIC_PREFIX, 'tiny', priority);

describe('POST /api/diffusion', () => {
  it('stores the input and the record, produces the message, and answers 202 with absolute links', async () => {
    const response = await postJob(api.url, {
      query: { model_name: 'tiny', prompt: '  a lighthouse at dusk  ', priority: '0' },
      image: await pngImage(100, 75),
    });
    expect(response.status).toBe(202);
    const body = await json(response);
    expect(body).toEqual({
      id: expect.stringMatching(JOB_ID),
      status: 'queued',
      model_name: 'tiny',
      priority: 'high',
      status_url: `${api.url}/api/jobs/${body.id}`,
      result_url: `${api.url}/api/results/${body.id}`,
      events_url: `${api.url}/api/jobs/${body.id}/events`,
    });
    expect(response.headers.get('location')).toBe(body.status_url);

    const [message] = await readTopic(api.config, topic('high'), 1);
    expect(message!.key).toBe(body.id);
    const parsed = JobMessage.parse(JSON.parse(message!.value));
    expect(parsed).toMatchObject({ v: 1, id: body.id, model_name: 'tiny', priority: 'high', record: { id: body.id, status: 'queued' } });

    // The record the message carries, placed where the message is, is the record as stored: a
    // consumer that is handed it writes the job's start on it without reading it first.
    const consumerStore = new ObjectStore(api.config);
    const reads = vi.spyOn(consumerStore, 'get');
    const consumerRecords = new RecordStore(consumerStore);
    const place = { topic: topic('high'), partition: message!.partition, offset: message!.offset };
    expect(consumerRecords.handOver({ ...parsed.record!, queue: place })).toBe(true);
    expect((await consumerRecords.apply(body.id, (r) => lifecycle.start(r))).event?.type).toBe('started');
    expect(reads).not.toHaveBeenCalled();
    consumerStore.close();

    const record = await api.services.records.get(body.id);
    expect(record).toMatchObject({
      status: 'running',
      priority: 'high',
      width: 96,
      height: 72,
      input_key: jobKeys(body.id).input,
      params: { prompt: 'a lighthouse at dusk', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5 },
    });
    expect(record!.params.seed).toBeGreaterThanOrEqual(0);
    expect(record!.params.seed).toBeLessThan(2 ** 32);

    const input = await api.services.store.getBytes(jobKeys(body.id).input);
    const meta = await sharp(input!).metadata();
    expect(meta).toMatchObject({ format: 'png', width: 96, height: 72, channels: 3, depth: 'uchar', hasAlpha: false });
  });

  it('takes every field as a multipart field too, and records an explicit seed', async () => {
    const response = await postJob(api.url, {
      query: {},
      fields: {
        model_name: 'tiny',
        prompt: 'a fox\nin the snow',
        priority: 'low',
        negative_prompt: 'blurry',
        strength: '0.25',
        steps: '4',
        guidance_scale: '3',
        seed: '4294967295',
      },
    });
    expect(response.status).toBe(202);
    const { id } = await json(response);
    expect(await api.services.records.get(id)).toMatchObject({
      priority: 'low',
      params: { prompt: 'a fox\nin the snow', negative_prompt: 'blurry', strength: 0.25, steps: 4, guidance_scale: 3, seed: 4294967295 },
    });
    const [message] = await readTopic(api.config, topic('low'), 1);
    expect(message!.key).toBe(id);
  });

  it('publishes a queued event keyed by the job id', async () => {
    const { id } = await json(await postJob(api.url, { query: { model_name: 'tiny', prompt: 'events', priority: '1' } }));
    const events = await readTopic(api.config, eventsTopic(api.config.TOPIC_PREFIX), (read) => read.some((event) => event.key === id));
    const mine = events.filter((event) => event.key === id).map((event) => JobEvent.parse(JSON.parse(event.value)));
    expect(mine).toEqual([expect.objectContaining({ id, type: 'queued', model_name: 'tiny' })]);
  });

  it('auto-orients, flattens alpha on white and crops to a multiple of 8', async () => {
    const rotated = await sharp({ create: { width: 50, height: 20, channels: 3, background: 'red' } })
      .jpeg()
      .withMetadata({ orientation: 6 }) // displayed rotated by 90°: 20 wide, 50 high
      .toBuffer();
    const { id } = await json(await postJob(api.url, { image: rotated, filename: 'photo.bin', contentType: 'application/octet-stream' }));
    expect(await api.services.records.get(id)).toMatchObject({ width: 16, height: 48 });

    const transparent = await sharp({ create: { width: 16, height: 16, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } })
      .webp({ lossless: true })
      .toBuffer();
    const second = await json(await postJob(api.url, { image: transparent }));
    const input = await api.services.store.getBytes(jobKeys(second.id).input);
    const { data, info } = await sharp(input!).raw().toBuffer({ resolveWithObject: true });
    expect(info.channels).toBe(3);
    expect([...data.subarray(0, 3)]).toEqual([255, 255, 255]);
  });
});

describe('Idempotency-Key', () => {
  it('answers the same job for the same request, and 409 for a different one', async () => {
    const key = randomUUID();
    const image = await pngImage(32, 32);
    const request = { query: { model_name: 'tiny', prompt: 'same', priority: 'high' }, image, headers: { 'Idempotency-Key': key } };
    const before = await topicSize(api.services.admin, topic('high'));

    const first = await postJob(api.url, request);
    const again = await postJob(api.url, request);
    expect(first.status).toBe(202);
    expect(again.status).toBe(202);
    const firstBody = await json(first);
    expect((await json(again)).id).toBe(firstBody.id);
    expect(await topicSize(api.services.admin, topic('high'))).toBe(before + 1);

    const different = await postJob(api.url, { ...request, query: { ...request.query, prompt: 'different' } });
    expect(different.status).toBe(409);
    expect(await json(different)).toEqual({
      error: { code: 'idempotency_key_reused', message: expect.any(String), field: 'Idempotency-Key', request_id: expect.any(String) },
    });
    expect((await api.services.records.get(firstBody.id))?.idempotency?.key_hash).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('GET /api/jobs/{id}', () => {
  it('answers the public view of the record', async () => {
    const { id } = await json(await postJob(api.url));
    const response = await fetch(`${api.url}/api/jobs/${id}`);
    expect(response.status).toBe(200);
    const view = await json(response);
    expect(view).toMatchObject({ id, status: 'queued', model_name: 'tiny', priority: 'normal', width: 64, height: 48, attempts: 0 });
    expect(view).not.toHaveProperty('input_key');
    expect(view.events_url).toBe(`${api.url}/api/jobs/${id}/events`);
  });

  it('answers 404 for an unknown id and for a malformed one', async () => {
    for (const id of ['AAAAAAAAAAAAAAAAAAAAAA', 'not-a-job', '..%2F..%2Fetc']) {
      const response = await fetch(`${api.url}/api/jobs/${id}`);
      expect(response.status).toBe(404);
      expect((await json(response)).error.code).toBe('job_not_found');
    }
  });
});
