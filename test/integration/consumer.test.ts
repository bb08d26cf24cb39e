// The consumer against the real Kafka, MinIO and the `tiny` runner: results,
// cancel, crashes of the runner, poison messages and determinism.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import * as lifecycle from '../../common/lifecycle.js';
import { Publisher } from '../../common/publisher.js';
import { createKafka } from '../../common/kafka.js';
import { RecordStore } from '../../common/records.js';
import { jobKeys, ObjectStore } from '../../common/storage.js';
import { dlqTopic, jobTopic } from '../../common/topics.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { ConsumerProcess, enqueue, prepareServers, readEvents, waitFor, waitForStatus } from '../helpers/consumer.js';

const config = testConfig();
const kafka = createKafka(config, uniqueName('consumer-test'));
const store = new ObjectStore(config);
const records = new RecordStore(store);
// Batches of one: the runner holds at most two jobs (one running, one next), so the
// tests know which jobs are still waiting in the consumer (a higher priority may go past).
const benchLog = join(mkdtempSync(join(tmpdir(), 'bench-log-')), 'runs.csv');
const consumer = new ConsumerProcess({
  TOPIC_PREFIX: config.TOPIC_PREFIX, IDLE_UNLOAD_MS: '0', RUNNER_STALL_MS: '20000', RUNNER_MAX_BATCH: '1', RUNNER_BENCH_LOG: benchLog,
});
const submit = (options: Parameters<typeof enqueue>[4] = {}) => enqueue(kafka, config, store, records, options);
/** Slow enough on a CPU to be caught running: many steps at full strength on a larger image. */
const slow = { size: 256, params: { steps: 150, strength: 1 } };

const producer = kafka.producer();
const publisher = new Publisher(kafka, config.TOPIC_PREFIX);

beforeAll(async () => {
  await prepareServers(kafka, config, store);
  await producer.connect();
  await publisher.connect();
  await consumer.start();
  await consumer.ready();
}, 120_000);

afterAll(async () => {
  await producer.disconnect();
  await publisher.disconnect();
  await consumer.stop('SIGKILL');
});

/**
 * What the API's DELETE does: cancel a queued job outright, or ask the consumer to stop a running
 * one; either way the consumer hears of it (a queued job may wait in its runner).
 */
async function requestCancel(id: string): Promise<void> {
  const { record } = await records.apply(id, (r) => (r.status === 'queued' ? lifecycle.cancel(r) : lifecycle.requestCancel(r)));
  if (record?.status !== 'running' && record?.status !== 'canceled') return;
  await publisher.publishCancel({ v: 1, id, model_name: 'tiny', at: new Date().toISOString() }, AbortSignal.timeout(5000));
}

/** The consumer's JSON log lines about one job. */
const jobLines = (id: string) =>
  consumer.log
    .split('\n')
    .filter((line) => line.startsWith('{') && line.includes(id))
    .map((line) => JSON.parse(line) as { level: number; msg: string; [field: string]: unknown });

describe('consumer', () => {
  it('turns a queued job into a stored PNG of the same size and records it', async () => {
    const id = await submit({ size: 64 });
    const record = await waitForStatus(records, id, ['succeeded', 'failed']);
    expect(record.status).toBe('succeeded');
    expect(record.output_key).toBe(jobKeys(id).output);
    expect(record.attempts).toBe(1);
    expect(record.timings?.compute_s).toBeGreaterThan(0);
    expect(record.peak_memory_bytes).toBeGreaterThan(0);
    expect(record.notes).toBeUndefined();
    const output = await store.getBytes(jobKeys(id).output);
    const meta = await sharp(output!).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);

    const seen = await readEvents(kafka, config, [id], (list) => list.some((e) => e.type === 'succeeded'));
    const types = seen.map((event) => event.type);
    expect(types[0]).toBe('started');
    expect(types).toContain('progress');
    expect(types.at(-1)).toBe('succeeded');

    // The benchmark log: model; time in seconds; memory in MiB, one line per job.
    const lines = readFileSync(benchLog, 'utf8').trim().split('\n');
    expect(lines.at(-1)).toMatch(/^tiny;\d+(\.\d+)?;\d+(\.\d+)?$/);

    // One info line when the job ends, none for its start or steps.
    const ended = await waitFor(async () => jobLines(id).find((line) => line.msg === 'job ended'), 10_000, 'the job’s log line');
    expect(ended).toMatchObject({ level: 30, job: id, model: 'tiny', priority: 'normal', status: 'succeeded', attempts: 1 });
    expect(ended.queue_s).toBeGreaterThanOrEqual(0);
    expect(ended.run_s).toBeGreaterThan(0);
    expect(jobLines(id).filter((line) => line.level >= 30)).toEqual([ended]);
  });

  it('records the runner’s note on a prompt longer than the text encoder reads', async () => {
    // tiny's tokenizer reads each byte as a token: 100 bytes and CLIP's start and end tokens.
    const id = await submit({ size: 64, params: { prompt: 'a'.repeat(100) } });
    const record = await waitForStatus(records, id, ['succeeded', 'failed']);
    expect([record.status, record.notes]).toEqual(['succeeded', ['prompt: 102 tokens for CLIPTokenizer, which reads 77: the rest was left out']]);
  });

  it('gives the same bytes for the same input, parameters and seed', async () => {
    const ids = await Promise.all([submit({ params: { seed: 7 } }), submit({ params: { seed: 7 } }), submit({ params: { seed: 8 } })]);
    for (const id of ids) await waitForStatus(records, id, ['succeeded']);
    const [a, b, c] = await Promise.all(ids.map((id) => store.getBytes(jobKeys(id).output)));
    expect(Buffer.from(a!).equals(Buffer.from(b!))).toBe(true);
    expect(Buffer.from(a!).equals(Buffer.from(c!))).toBe(false);
  });

  /**
   * Fills the runner with two slow jobs (one running, one queued behind it) so that later jobs
   * of their priority and cost wait in the consumer's buffers.
   */
  async function occupyRunner(): Promise<string[]> {
    const first = await submit(slow);
    await waitFor(async () => ((await records.get(first))?.progress?.step ?? 0) > 0 || undefined, 60_000, 'progress');
    const second = await submit(slow);
    await new Promise((resolve) => setTimeout(resolve, 500)); // handed over; queued until the first ends
    expect((await records.get(second))?.status).toBe('queued');
    return [first, second];
  }

  it('never runs a job canceled while queued', async () => {
    const blockers = await occupyRunner();
    const id = await submit(slow); // as costly as the blockers: it cannot overtake them
    await new Promise((resolve) => setTimeout(resolve, 500)); // fetched and waiting behind the blockers
    await requestCancel(id);
    expect((await records.get(id))?.status).toBe('canceled');
    for (const blocker of blockers) await requestCancel(blocker);
    const after = await submit();
    await waitForStatus(records, after, ['succeeded']);
    const record = await records.get(id);
    expect(record?.status).toBe('canceled');
    expect(record?.attempts).toBe(0);
    expect(await store.getBytes(jobKeys(id).output)).toBeUndefined();
  });

  it('runs a later high job before a backlog of low ones', async () => {
    const blockers = await occupyRunner();
    const lows: string[] = [];
    for (let i = 0; i < 6; i++) lows.push(await submit({ priority: 'low' }));
    const normal = await submit({ priority: 'normal' });
    const high = await submit({ priority: 'high' });
    await new Promise((resolve) => setTimeout(resolve, 500)); // all fetched and waiting
    for (const blocker of blockers) await requestCancel(blocker);
    const done = await Promise.all([high, normal, ...lows].map((id) => waitForStatus(records, id, ['succeeded'])));
    const order = [...done].sort((a, b) => Date.parse(a.started_at!) - Date.parse(b.started_at!)).map((r) => r.id);
    // High goes past the full runner and overtakes the running blocker; normal waits for room
    // ahead of every low.
    expect(order.slice(0, 2)).toEqual([high, normal]);
    expect(new Set(order.slice(2))).toEqual(new Set(lows));
  });

  it('stops a running job at its next step', async () => {
    const id = await submit(slow);
    await waitFor(async () => ((await records.get(id))?.progress?.step ?? 0) > 0 || undefined, 60_000, 'progress');
    await requestCancel(id);
    const record = await waitForStatus(records, id, ['canceled', 'succeeded'], 30_000);
    expect(record.status).toBe('canceled');
    expect(record.progress!.step).toBeLessThan(record.progress!.total);
    expect(await store.getBytes(jobKeys(id).output)).toBeUndefined();
  });

  it('retries the job of a runner killed with SIGKILL, and it succeeds once', async () => {
    const id = await submit({ ...slow, params: { steps: 60, strength: 1 } });
    await waitFor(async () => ((await records.get(id))?.progress?.step ?? 0) > 0 || undefined, 60_000, 'progress');
    const pid = consumer.runnerPid();
    expect(pid).toBeDefined();
    process.kill(pid!, 'SIGKILL');
    const record = await waitForStatus(records, id, ['succeeded', 'failed'], 90_000);
    expect(record.status).toBe('succeeded');
    expect(record.attempts).toBe(2);
    const seen = await readEvents(kafka, config, [id], (list) => list.some((e) => e.type === 'succeeded'));
    expect(seen.filter((event) => event.type === 'succeeded')).toHaveLength(1);
    expect(consumer.runnerPid()).not.toBe(pid);
    const ended = await waitFor(async () => jobLines(id).find((line) => line.msg === 'job ended'), 10_000, 'the job’s log line');
    expect(ended).toMatchObject({ status: 'succeeded', attempts: 2 });
  });

  it('dead-letters a poison message once and keeps serving', async () => {
    await producer.send({ topic: jobTopic(config.TOPIC_PREFIX, 'tiny', 'normal'), messages: [{ key: 'x', value: '{not json' }] });
    const missingInput = await submit({ withoutInput: true });
    const failed = await waitForStatus(records, missingInput, ['failed', 'succeeded']);
    expect(failed.status).toBe('failed');
    expect(failed.error?.code).toBe('missing_input');

    const dead: { error: { code: string } }[] = [];
    const reader = kafka.consumer({ groupId: uniqueName('dlq-reader') });
    await reader.connect();
    await reader.subscribe({ topic: dlqTopic(config.TOPIC_PREFIX, 'tiny'), fromBeginning: true });
    await reader.run({ eachMessage: async ({ message }) => void dead.push(JSON.parse(String(message.value))) });
    await waitFor(async () => (dead.length >= 2 ? true : undefined), 20_000, 'two DLQ messages');
    await new Promise((resolve) => setTimeout(resolve, 1500)); // a looping poison message would show up again
    await reader.disconnect();
    expect(dead.map((d) => d.error.code).sort()).toEqual(['missing_input', 'poison']);

    const next = await submit();
    expect((await waitForStatus(records, next, ['succeeded', 'failed'])).status).toBe('succeeded');
  });
});
