// Event messages, with a fake producer: their type in a header always, the webhook header only
// for a job known to have no webhook (the dispatcher skips those unread); one message an event.
import type { Kafka, Message, ProducerBatch } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import type { JobEvent } from '../../common/jobs.js';
import { Publisher } from '../../common/publisher.js';
import { EVENT_TYPE_HEADER, NO_WEBHOOK, WEBHOOK_HEADER } from '../../common/topics.js';

function fakeKafka() {
  const sent: { topic: string; message: Message }[] = [];
  const producer = {
    connect: async () => {},
    sendBatch: async ({ topicMessages }: ProducerBatch) => {
      for (const { topic, messages } of topicMessages ?? []) for (const message of messages) sent.push({ topic, message });
      return (topicMessages ?? []).map(({ topic }) => ({ topicName: topic, partition: 0, errorCode: 0, baseOffset: '0' }));
    },
  };
  return { kafka: { producer: () => producer } as unknown as Kafka, sent };
}

const event: JobEvent = { v: 1, id: 'A'.repeat(22), type: 'started', at: '2026-01-01T00:00:00.000Z', model_name: 'tiny', attempt: 1 };

describe('Publisher.publishEvent', () => {
  it('says in a header that the job has no webhook, and nothing when it has one or when that is not known', async () => {
    const { kafka, sent } = fakeKafka();
    const publisher = new Publisher(kafka, 'test');
    const signal = AbortSignal.timeout(1000);
    const events = [1, 2, 3].map((attempt) => ({ ...event, attempt }));
    await publisher.publishEvent(events[0]!, signal, false);
    await publisher.publishEvent(events[1]!, signal, true);
    await publisher.publishEvent(events[2]!, signal);
    expect(sent.map(({ topic }) => topic)).toEqual(['test.events', 'test.events', 'test.events']);
    expect(sent.map(({ message }) => message.headers)).toEqual([
      { [EVENT_TYPE_HEADER]: 'started', [WEBHOOK_HEADER]: NO_WEBHOOK },
      { [EVENT_TYPE_HEADER]: 'started' },
      { [EVENT_TYPE_HEADER]: 'started' },
    ]);
    expect(sent.map(({ message }) => JSON.parse(String(message.value)))).toEqual(events);
  });

  it('sends an event once when it is published again while in flight, after its caller gave up, or once acknowledged', async () => {
    const { kafka, sent } = fakeKafka();
    const producer = kafka.producer();
    const send = producer.sendBatch.bind(producer);
    let release: () => void = () => {};
    // The broker answers late, as while its partitions fail over.
    producer.sendBatch = async (batch) => {
      await new Promise<void>((resolve) => (release = resolve));
      return send(batch);
    };
    const publisher = new Publisher(kafka, 'test');
    const gaveUp = publisher.publishEvent(event, AbortSignal.timeout(50));
    await expect(gaveUp).rejects.toThrow();
    const again = publisher.publishEvent(event, AbortSignal.timeout(5000)); // the outbox, trying again
    release();
    await again;
    await publisher.publishEvent(event, AbortSignal.timeout(5000)); // acknowledged already
    expect(sent).toHaveLength(1);
  });

  it('sends an event again whose first send never left (its caller gave up before)', async () => {
    const { kafka, sent } = fakeKafka();
    const publisher = new Publisher(kafka, 'test');
    const aborted = new AbortController();
    aborted.abort(new Error('deadline'));
    await expect(publisher.publishEvent(event, aborted.signal)).rejects.toThrow();
    await publisher.publishEvent(event, AbortSignal.timeout(1000));
    expect(sent).toHaveLength(1);
  });
});
