// Round trips through the real Kafka and MinIO that scripts/infra runs.
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { createKafka, ensureTopics } from '../../common/kafka.js';
import { ObjectStore } from '../../common/storage.js';
import { testConfig, uniqueName } from '../helpers/env.js';

const config = testConfig();

describe('Kafka', () => {
  const kafka = createKafka(config, uniqueName('client'));
  const admin = kafka.admin();
  afterAll(() => admin.disconnect());

  it('produces and consumes a message on a fresh topic', async () => {
    const topic = `${config.TOPIC_PREFIX}.roundtrip`;
    await admin.connect();
    await ensureTopics(admin, [topic], 2);
    expect(await admin.listTopics()).toContain(topic);

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const value = randomBytes(32).toString('hex');
    await producer.send({ topic, acks: -1, messages: [{ key: 'k1', value }] });
    await producer.disconnect();

    const consumer = kafka.consumer({ groupId: uniqueName('group') });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const received = await new Promise<{ key: string; value: string }>((resolve) => {
      void consumer.run({
        eachMessage: async ({ message }) => resolve({ key: String(message.key), value: String(message.value) }),
      });
    });
    await consumer.disconnect();
    expect(received).toEqual({ key: 'k1', value });
  });

  it('refuses to auto-create topics, so a typo cannot invent a queue', async () => {
    const producer = kafka.producer({ allowAutoTopicCreation: true });
    await producer.connect();
    await expect(
      producer.send({ topic: `${config.TOPIC_PREFIX}.never-created`, messages: [{ value: 'x' }] }),
    ).rejects.toThrow();
    await producer.disconnect();
  });
});

describe('object storage', () => {
  const store = new ObjectStore(config);

  it('creates the bucket idempotently, then puts and gets an object', async () => {
    await store.ensureBucket();
    await store.ensureBucket();
    const key = `${uniqueName('objects')}/blob.bin`;
    const bytes = randomBytes(100_000);
    await store.put(key, bytes, 'application/octet-stream');
    expect(Buffer.from((await store.getBytes(key))!)).toEqual(bytes);
  });

  it('answers undefined for a missing key', async () => {
    expect(await store.getBytes(`${uniqueName('missing')}/nothing`)).toBeUndefined();
  });
});
