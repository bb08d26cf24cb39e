// The oldest queued job's age (common/age.ts) against the real Kafka: messages stamped with old
// acceptance times on a model's topics, found by Kafka's offsets-by-timestamp lookup over every
// partition, and counted from the consumer group's commits once it has some.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QueueAge } from '../../common/age.js';
import { QueueDepth } from '../../common/depth.js';
import { createKafka, ensureTopics } from '../../common/kafka.js';
import { allTopics, consumerGroup, jobTopic } from '../../common/topics.js';
import { testConfig, uniqueName } from '../helpers/env.js';

const config = testConfig({ TOPIC_PREFIX: uniqueName('age') });
const prefix = config.TOPIC_PREFIX;
const kafka = createKafka(config, uniqueName('age'));
const admin = kafka.admin();
const producer = kafka.producer();
const normal = jobTopic(prefix, 'tiny', 'normal');
const ageNow = () => new QueueAge(new QueueDepth(admin, prefix, ['tiny']), (topic, time) => admin.fetchTopicOffsetsByTimestamp(topic, time)).get();
let sentAt = 0;

beforeAll(async () => {
  await Promise.all([admin.connect(), producer.connect()]);
  await ensureTopics(admin, allTopics(prefix, ['tiny']), 2);
  sentAt = Date.now();
  // Accepted 600 s and 10 s ago on partition 0 (offsets 0 and 1), 300 s ago on partition 1 (offset 0).
  const message = (partition: number, ageS: number) => ({ partition, key: String(ageS), value: '{}', timestamp: String(sentAt - ageS * 1000) });
  await producer.send({ topic: normal, messages: [message(0, 600), message(1, 300), message(0, 10)] });
}, 60_000);

afterAll(async () => {
  await admin.deleteTopics({ topics: allTopics(prefix, ['tiny']) }).catch(() => {});
  await admin.deleteGroups([consumerGroup(prefix, 'tiny')]).catch(() => {});
  await Promise.allSettled([producer.disconnect(), admin.disconnect()]);
});

/** `age` as measured some seconds after sending: within the search's 4.4 % below, plus the time since. */
const near = (found: number, age: number) => {
  const elapsed = (Date.now() - sentAt) / 1000;
  expect(found).toBeGreaterThanOrEqual(Math.floor(age / 1.045));
  expect(found).toBeLessThanOrEqual(Math.ceil(age + elapsed));
};

describe('the oldest queued job against the real Kafka', () => {
  it("is the oldest message of any partition while the model's group has committed nothing; 0 where nothing waits", async () => {
    const ages = (await ageNow()).get('tiny')!;
    near(ages.normal, 600);
    expect(ages.high).toBe(0);
    expect(ages.low).toBe(0);
  });

  it("counts from the group's commits: past the oldest, the next oldest on the other partition", async () => {
    await admin.setOffsets({ groupId: consumerGroup(prefix, 'tiny'), topic: normal, partitions: [{ partition: 0, offset: '1' }] });
    near((await ageNow()).get('tiny')!.normal, 300);
    await admin.setOffsets({ groupId: consumerGroup(prefix, 'tiny'), topic: normal, partitions: [{ partition: 0, offset: '1' }, { partition: 1, offset: '1' }] });
    near((await ageNow()).get('tiny')!.normal, 10);
    await admin.setOffsets({ groupId: consumerGroup(prefix, 'tiny'), topic: normal, partitions: [{ partition: 0, offset: '2' }, { partition: 1, offset: '1' }] });
    expect((await ageNow()).get('tiny')!.normal).toBe(0);
  });
});
