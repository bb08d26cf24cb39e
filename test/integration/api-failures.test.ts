// A dependency down: object storage at a dead endpoint (with the real Kafka), or Kafka at a
// dead port (with the real MinIO). The client gets 503 with Retry-After in time, and nothing
// half-made is left: no message without its input, no record without its message.
import { DeleteBucketCommand, DeleteObjectsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { S3Client } from '@aws-sdk/client-s3';
import { createS3 } from '../../common/storage.js';
import { PRIORITIES, jobTopic } from '../../common/topics.js';
import { json, postJob, startTestApi, topicSize, type TestApi } from '../helpers/api.js';
import { uniqueName } from '../helpers/env.js';

async function listKeys(s3: S3Client, bucket: string): Promise<string[]> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket }));
  return (listed.Contents ?? []).map((object) => object.Key!);
}

async function removeBucket(s3: S3Client, bucket: string): Promise<void> {
  const keys = await listKeys(s3, bucket);
  if (keys.length) await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.map((Key) => ({ Key })) } }));
  await s3.send(new DeleteBucketCommand({ Bucket: bucket }));
}

describe('object storage down', () => {
  let api: TestApi;
  beforeAll(async () => {
    api = await startTestApi({ S3_ENDPOINT: 'http://127.0.0.1:1' }, { storage: false });
  });
  afterAll(() => api?.close());

  it('answers 503 with Retry-After and produces no message', async () => {
    const response = await postJob(api.url, { query: { model_name: 'tiny', prompt: 'x', priority: 'high' } });
    expect(response.status).toBe(503);
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await json(response)).error.code).toBe('storage_unavailable');
    for (const priority of PRIORITIES) {
      expect(await topicSize(api.services.admin, jobTopic(api.config.TOPIC_PREFIX, 'tiny', priority))).toBe(0);
    }
  });

  it('answers 503 to reads and names storage in /readyz', async () => {
    expect((await fetch(`${api.url}/api/jobs/AAAAAAAAAAAAAAAAAAAAAA`)).status).toBe(503);
    const ready = await fetch(`${api.url}/readyz`);
    expect(ready.status).toBe(503);
    const body = await json(ready);
    expect(body.checks.kafka).toBe('ok');
    expect(body.checks.storage).toMatch(/^unreachable/);
    expect(body.error.message).toMatch(/storage/);
  });
});

describe('Kafka down', () => {
  let api: TestApi;
  beforeAll(async () => {
    // A bucket of its own, so "nothing was left behind" can be checked by listing it.
    api = await startTestApi({ KAFKA_BROKERS: '127.0.0.1:1', S3_BUCKET: uniqueName('bucket') }, { kafka: false });
  });
  afterAll(async () => {
    await removeBucket(createS3(api.config), api.config.S3_BUCKET).catch(() => {});
    await api?.close();
  });

  it('answers 503 with Retry-After (at its dependency deadline) and leaves no record, input or claim', async () => {
    const started = Date.now();
    const response = await postJob(api.url, { headers: { 'Idempotency-Key': randomUUID() } });
    // Timing is measured, not asserted: a loaded machine must not fail the test.
    console.log(`503 with Kafka down after ${Date.now() - started} ms (DEPENDENCY_TIMEOUT_MS ${api.config.DEPENDENCY_TIMEOUT_MS})`);
    expect(response.status).toBe(503);
    expect(Number(response.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await json(response)).error.code).toBe('kafka_unavailable');

    // The input may have been stored beside the failed send; the clean-up runs right after the answer.
    // (The job's sweep entry stays until its check, which finds no record and has nothing to do.)
    const kept = async () => (await listKeys(createS3(api.config), api.config.S3_BUCKET)).filter((key) => !key.startsWith('sweep/'));
    await expect.poll(kept, { timeout: 3000 }).toEqual([]);
  });

  it('names Kafka in /readyz within its deadline', async () => {
    const started = Date.now();
    const ready = await fetch(`${api.url}/readyz`);
    console.log(`/readyz with Kafka down answered after ${Date.now() - started} ms`);
    expect(ready.status).toBe(503);
    const body = await json(ready);
    expect(body.checks).toEqual({ kafka: expect.stringMatching(/^unreachable/), storage: 'ok' });
  });
});
