// The headers of an event message, with a fake producer: its type always, and the webhook header
// only for a job known to have no webhook (the dispatcher skips those unread).
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
    await publisher.publishEvent(event, signal, false);
    await publisher.publishEvent(event, signal, true);
    await publisher.publishEvent(event, signal);
    expect(sent.map(({ topic }) => topic)).toEqual(['test.events', 'test.events', 'test.events']);
    expect(sent.map(({ message }) => message.headers)).toEqual([
      { [EVENT_TYPE_HEADER]: 'started', [WEBHOOK_HEADER]: NO_WEBHOOK },
      { [EVENT_TYPE_HEADER]: 'started' },
      { [EVENT_TYPE_HEADER]: 'started' },
    ]);
    expect(sent.map(({ message }) => JSON.parse(String(message.value)))).toEqual([event, event, event]);
  });
});
