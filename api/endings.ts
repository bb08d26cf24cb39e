// Frees a job's concurrency slot when it ends. All API replicas share one consumer group on
// the events topic, so each ending is handled once, by one of them; a missed one is freed
// by the slot's age limit (api/limits.ts).
import type { Consumer, Kafka } from 'kafkajs';
import { isEnding, JobEvent, parseValue } from '../common/jobs.js';
import { eventsTopic } from '../common/topics.js';
import type { Limits } from './limits.js';

export class EndingsFollower {
  private readonly consumer: Consumer;

  constructor(
    kafka: Kafka,
    private readonly prefix: string,
    private readonly limits: Pick<Limits, 'ended'>,
  ) {
    this.consumer = kafka.consumer({ groupId: `${prefix}-api-limits`, maxWaitTimeInMs: 500 });
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: eventsTopic(this.prefix), fromBeginning: false });
    await this.consumer.run({
      eachMessage: async ({ message }) => {
        const event = parseValue(JobEvent, message.value);
        if (event.success && isEnding(event.data.type)) await this.limits.ended(event.data.id);
      },
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }
}
