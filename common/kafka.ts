// The kafkajs client and topic creation (the broker's auto-creation is off).
import { Kafka, logLevel, type Admin, type logCreator } from 'kafkajs';
import type { KafkaConfig } from './config.js';
import { createLogger, type Logger } from './logger.js';
import { topicSettings } from './topics.js';

/**
 * kafkajs logs through the process' pino logger. Its ERROR lines are mostly connection
 * attempts it retries by itself, so they are warnings here; a failure that matters
 * surfaces as a rejected call.
 */
const toPino =
  (logger: Logger): logCreator =>
  () =>
  ({ namespace, level, log }) => {
    const { message, ...extra } = log;
    const line = { kafkajs: namespace, ...extra };
    if (level <= logLevel.WARN) logger.warn(line, message);
    else if (level === logLevel.INFO) logger.info(line, message);
    else logger.debug(line, message);
  };

export function createKafka(config: KafkaConfig & { LOG_LEVEL: string }, clientId = config.KAFKA_CLIENT_ID, logger?: Logger): Kafka {
  return new Kafka({
    clientId,
    brokers: config.KAFKA_BROKERS,
    logLevel: logLevel.WARN,
    logCreator: toPino(logger ?? createLogger('kafkajs', config.LOG_LEVEL)),
    connectionTimeout: 3000,
    requestTimeout: 10_000,
    retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
  });
}

/**
 * Copies of each partition for a cluster of `brokers`: three from three brokers on, and writes
 * (acks=all) need two of them, so one broker can die without losing an acknowledged message or
 * stopping writes; below three, as many copies as brokers and one in sync.
 */
export function replicationFor(brokers: number): { replicationFactor: number; minInsyncReplicas: number } {
  const replicationFactor = Math.max(1, Math.min(3, brokers));
  return { replicationFactor, minInsyncReplicas: replicationFactor >= 3 ? 2 : 1 };
}

/** Creates the missing topics, replicated as the cluster's size allows; existing ones are left as they are. */
export async function ensureTopics(admin: Admin, topics: string[], partitions: number): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((topic) => !existing.has(topic));
  if (!missing.length) return;
  const { brokers } = await admin.describeCluster();
  const { replicationFactor, minInsyncReplicas } = replicationFor(brokers.length);
  const replicated = { name: 'min.insync.replicas', value: String(minInsyncReplicas) };
  await admin.createTopics({
    waitForLeaders: false,
    topics: missing.map((topic) => ({ topic, numPartitions: partitions, replicationFactor, configEntries: [...topicSettings(topic), replicated] })),
  });
  await waitForLeaders(admin, missing);
}

/**
 * Resolves once every partition of `topics` has a leader that answers. kafkajs' own wait (waitForLeaders)
 * gives up when it asks a broker that has not yet heard of a new topic, which happens in a
 * cluster of several brokers; here every failure is asked again until the deadline.
 */
async function waitForLeaders(admin: Admin, topics: string[], timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const { topics: metadata } = await admin.fetchTopicMetadata({ topics });
      if (metadata.every(({ partitions }) => partitions.length > 0 && partitions.every((p) => p.leader >= 0))) {
        // The metadata can name a leader before that broker serves the partition: ask it.
        await Promise.all(topics.map((topic) => admin.fetchTopicOffsets(topic)));
        return;
      }
    } catch (error) {
      // Besides retriable errors, kafkajs' offsets call throws a TypeError when its cached metadata
      // came from a broker that has not heard of the topic yet: both pass once the brokers agree.
      if (Date.now() > deadline) throw error;
    }
    if (Date.now() > deadline) throw new Error(`topics still without leaders after ${timeoutMs} ms: ${topics.join(', ')}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
