// A benchmark's topics are of no use after its run, and every partition left on the broker costs
// it CPU in every later run.
import type { KafkaConfig } from '../common/config.js';
import { createKafka } from '../common/kafka.js';

export async function dropTopics(config: KafkaConfig & { LOG_LEVEL: string }, topics: string[]): Promise<void> {
  const admin = createKafka(config, 'bench').admin();
  await admin.connect();
  try {
    await admin.deleteTopics({ topics });
  } finally {
    await admin.disconnect();
  }
}
