// Kafka hangs while a job ends: the job's SSE stream still ends with it, and
// its ending is published once Kafka is back, even though the consumer that ran it was killed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { json, openEventStream, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { ConsumerProcess, pngOf, waitFor, waitForStatus } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';
import { countOf, followEvents, report, servers, sleep } from '../helpers/faults.js';

let api: TestApi;
const consumers: ConsumerProcess[] = [];

beforeAll(async () => {
  api = await startTestApi();
}, 120_000);
afterAll(async () => {
  servers.resume('kafka'); // never leave the broker frozen, whatever failed
  for (const consumer of consumers) await consumer.stop('SIGKILL');
  await api?.close();
});

describe('Kafka paused while a job ends', () => {
  it('ends the stream with the job, and publishes the ending after Kafka and a new consumer come back', async () => {
    const env = { TOPIC_PREFIX: api.config.TOPIC_PREFIX, IDLE_UNLOAD_MS: '0' };
    const first = await new ConsumerProcess(env).start();
    consumers.push(first);
    await first.ready();
    const query = { model_name: 'tiny', prompt: 'fault', steps: '150', strength: '1', seed: '3' };
    const response = await postJob(api.url, { image: await pngOf(256, 256), query });
    expect(response.status).toBe(202);
    const { id, events_url } = await json(response);
    const stream = await openEventStream(events_url);
    await waitFor(async () => {
      const event = await stream.next(60_000);
      return event?.event === 'progress' && JSON.parse(event.data).step >= 10 ? true : undefined;
    }, 60_000, 'progress');

    servers.pause('kafka');
    let last: string | undefined;
    let outlivedSeconds: number;
    try {
      const record = await waitForStatus(api.services.records, id, ['succeeded', 'failed'], 60_000);
      for (;;) {
        const event = await stream.next(30_000); // throws if the stream hangs on
        if (!event) break;
        last = event.event;
      }
      outlivedSeconds = (Date.now() - Date.parse(record.finished_at!)) / 1000;
      await first.stop('SIGKILL'); // the run that holds the unpublished ending dies with it
    } finally {
      servers.resume('kafka');
    }
    expect(last).toBe('succeeded');

    const second = await new ConsumerProcess(env).start();
    consumers.push(second);
    const events = await followEvents(createKafka(api.config, uniqueName('fault')), api.config);
    const record = await waitFor(async () => {
      const current = await api.services.records.get(id);
      return current && current.outbox.length === 0 && events.of(id, 'succeeded').length ? current : undefined;
    }, 120_000, 'the ending to be published');
    await events.stop();
    const count = countOf(1, [record], events.events);
    report('Kafka paused at the end of a job', count, { stream_outlived_job_s: outlivedSeconds.toFixed(1) });
    expect(count).toMatchObject({ succeeded: 1, lost: 0 });
    expect(events.of(id, 'succeeded').length).toBeGreaterThanOrEqual(1);
  }, 300_000);

  it('a start deadline that passes while Kafka is down ends the job aborted; its event goes out once Kafka is back', async () => {
    for (const consumer of consumers) await consumer.stop('SIGKILL'); // nobody takes the job meanwhile
    const response = await postJob(api.url, { image: await pngOf(64, 64), query: { model_name: 'tiny', prompt: 'late', start_by: '2' } });
    expect(response.status).toBe(202);
    const { id, status_url } = await json(response);
    servers.pause('kafka');
    let seen: Record<string, any>;
    try {
      await sleep(2500);
      seen = await json(await fetch(status_url)); // reads storage only: answers while Kafka hangs
    } finally {
      servers.resume('kafka');
    }
    expect(seen).toMatchObject({ status: 'aborted', started_at: null, error: { code: 'deadline_exceeded' } });

    // A consumer that meets the message finds the ending in the record's outbox and publishes it.
    const consumer = await new ConsumerProcess({ TOPIC_PREFIX: api.config.TOPIC_PREFIX, IDLE_UNLOAD_MS: '0' }).start();
    consumers.push(consumer);
    const events = await followEvents(createKafka(api.config, uniqueName('fault')), api.config);
    const record = await waitFor(async () => {
      const current = await api.services.records.get(id);
      return current && current.outbox.length === 0 && events.of(id, 'aborted').length ? current : undefined;
    }, 120_000, 'the aborted event to be published');
    await sleep(1000); // a second publication, if any, would show here
    await events.stop();
    const count = countOf(1, [record], events.events);
    report('a start deadline passing while Kafka is down', count);
    expect(count).toMatchObject({ submitted: 1, accepted: 1, aborted: 1, lost: 0, duplicated: 0 });
    expect(record.started_at).toBeNull();
  }, 180_000);
});
