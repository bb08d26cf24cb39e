// The kafkajs client and topic creation (the broker's auto-creation is off).
import { Kafka, logLevel, type Admin } from 'kafkajs';
import type { Config } from './config.js';

export function createKafka(config: Config, clientId = config.KAFKA_CLIENT_ID): Kafka {
  return new Kafka({
    clientId,
    brokers: config.KAFKA_BROKERS,
    logLevel: logLevel.ERROR,
    connectionTimeout: 3000,
    requestTimeout: 10_000,
    retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 2000 },
  });
}

/** Creates the missing topics; existing ones are left as they are. */
export async function ensureTopics(admin: Admin, topics: string[], partitions: number): Promise<void> {
  const existing = new Set(await admin.listTopics());
  const missing = topics.filter((topic) => !existing.has(topic));
  if (!missing.length) return;
  await admin.createTopics({
    waitForLeaders: true,
    topics: missing.map((topic) => ({ topic, numPartitions: partitions, replicationFactor: 1 })),
  });
}
