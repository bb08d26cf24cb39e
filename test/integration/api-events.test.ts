// GET /api/jobs/{id}/events: Server-Sent Events fed by the real events topic. The tests
// publish the consumer's events with their own kafkajs producer.
import type { Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EventType, JobEvent } from '../../common/jobs.js';
import { createKafka } from '../../common/kafka.js';
import { eventsTopic } from '../../common/topics.js';
import { json, openEventStream, postJob, startTestApi, type EventStream, type TestApi } from '../helpers/api.js';

let api: TestApi;
let producer: Producer;
beforeAll(async () => {
  api = await startTestApi({ SSE_HEARTBEAT_MS: '300' });
  producer = createKafka(api.config, 'sse-test').producer();
  await producer.connect();
});
afterAll(async () => {
  await producer?.disconnect();
  await api?.close();
});

async function newJob(): Promise<string> {
  return (await json(await postJob(api.url))).id;
}

async function publish(id: string, type: EventType, extra: Partial<JobEvent> = {}): Promise<void> {
  const event: JobEvent = { v: 1, id, type, at: new Date().toISOString(), model_name: 'tiny', ...extra };
  await producer.send({ topic: eventsTopic(api.config.TOPIC_PREFIX), acks: -1, messages: [{ key: id, value: JSON.stringify(event) }] });
}

/** Live events until the stream ends. The API's own `queued` event may arrive after the snapshot; it is not what is tested here. */
async function rest(stream: EventStream) {
  const events = [];
  for (let event = await stream.next(); event; event = await stream.next()) if (event.event !== 'queued') events.push(event);
  return events;
}

const open = (id: string, headers?: Record<string, string>) => openEventStream(`${api.url}/api/jobs/${id}/events`, headers);

describe('GET /api/jobs/{id}/events', () => {
  it('sends a snapshot, then the lifecycle in order with <partition>-<offset> ids, and ends after the terminal event', async () => {
    const id = await newJob();
    const stream = await open(id);
    expect(stream.response.status).toBe(200);
    expect(stream.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const snapshot = await stream.next();
    expect(snapshot?.event).toBe('snapshot');
    expect(JSON.parse(snapshot!.data)).toMatchObject({ id, status: 'queued', events_url: `${api.url}/api/jobs/${id}/events` });

    await publish(id, 'started', { attempt: 1 });
    await publish(id, 'progress', { step: 1, total: 2 });
    await publish(id, 'progress', { step: 2, total: 2 });
    await publish(id, 'succeeded');
    const events = await rest(stream);
    expect(events.map((event) => event.event)).toEqual(['started', 'progress', 'progress', 'succeeded']);
    expect(events.map((event) => JSON.parse(event.data).step)).toEqual([undefined, 1, 2, undefined]);
    const positions = events.map((event) => event.id!.split('-').map(Number));
    for (const [partition, offset] of positions) expect(Number.isInteger(partition) && Number.isInteger(offset)).toBe(true);
    expect(new Set(positions.map(([partition]) => partition)).size).toBe(1); // keyed by job id: one partition
    expect(positions.map(([, offset]) => offset)).toEqual([...positions.map(([, offset]) => offset!)].sort((a, b) => a - b));
  });

  it("ends a finished job's stream as a live one ends: snapshot, then its terminal event", async () => {
    const id = await newJob();
    await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE' });
    const stream = await open(id);
    const snapshot = await stream.next();
    expect(JSON.parse(snapshot!.data).status).toBe('canceled');
    const ending = await stream.next();
    expect(ending?.event).toBe('canceled');
    expect(JSON.parse(ending!.data)).toMatchObject({ v: 1, id, type: 'canceled', model_name: 'tiny' });
    expect(await stream.next()).toBeUndefined();
  });

  it('fans one event out to every stream of the job, and only of that job', async () => {
    const [id, other] = [await newJob(), await newJob()];
    const streams = [await open(id), await open(id), await open(other)];
    for (const stream of streams) expect((await stream.next())?.event).toBe('snapshot');
    await publish(id, 'failed', { error: { code: 'boom', message: 'it broke' } });
    for (const stream of streams.slice(0, 2)) expect((await rest(stream)).map((event) => event.event)).toEqual(['failed']);
    await publish(other, 'canceled');
    expect((await rest(streams[2]!)).map((event) => event.event)).toEqual(['canceled']);
  });

  it('resumes after Last-Event-ID: a fresh snapshot, then only newer events', async () => {
    const id = await newJob();
    const first = await open(id);
    await first.next(); // snapshot
    await publish(id, 'started');
    let started = await first.next();
    while (started?.event === 'queued') started = await first.next();
    first.close();

    const [partition, offset] = started!.id!.split('-').map(Number);
    // Claims to have seen one more event than exists: the next one published is skipped.
    const resumed = await open(id, { 'Last-Event-ID': `${partition}-${offset! + 1}` });
    expect((await resumed.next())?.event).toBe('snapshot');
    await publish(id, 'progress', { step: 1, total: 2 }); // offset + 1: skipped
    await publish(id, 'progress', { step: 2, total: 2 });
    await publish(id, 'succeeded');
    const events = await rest(resumed);
    expect(events.map((event) => [event.event, JSON.parse(event.data).step])).toEqual([
      ['progress', 2],
      ['succeeded', undefined],
    ]);
    expect(events.every((event) => Number(event.id!.split('-')[1]) > offset! + 1)).toBe(true);
  });

  it('sends heartbeat comments while idle, and forgets a client that leaves', async () => {
    const id = await newJob();
    const stream = await open(id);
    await stream.next();
    await expect.poll(() => stream.comments.length, { timeout: 3000 }).toBeGreaterThan(0);
    expect(api.services.hub.size).toBeGreaterThan(0);
    stream.close();
    await expect.poll(() => api.services.hub.size, { timeout: 3000 }).toBe(0);
  });

  it('answers 404 in the JSON error shape for an unknown job', async () => {
    const response = await fetch(`${api.url}/api/jobs/AAAAAAAAAAAAAAAAAAAAAA/events`);
    expect(response.status).toBe(404);
    expect((await json(response)).error.code).toBe('job_not_found');
    expect(api.services.hub.size).toBe(0);
  });
});
