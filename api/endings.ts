// Frees a job's concurrency slot when it ends. All API replicas share one consumer group on
// the events topic, so each ending is handled once, by one of them; a missed one is freed
// by the limits' reconciliation (api/limits.ts).
import type { Consumer, Kafka } from 'kafkajs';
import { isEnding, JobEvent, parseValue } from '../common/jobs.js';
import { EVENT_TYPE_HEADER, eventsTopic } from '../common/topics.js';
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
        // Progress makes most of the topic: the type header tells an ending without parsing it.
        const type = message.headers?.[EVENT_TYPE_HEADER]?.toString();
        if (type !== undefined && !isEnding(type)) return;
        const event = parseValue(JobEvent, message.value);
        if (event.success && isEnding(event.data.type)) await this.limits.ended(event.data.id);
      },
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }
}
