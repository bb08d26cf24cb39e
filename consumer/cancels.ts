// Listens on the events topic for cancel requests and passes them to the workers.
// Every consumer process has its own group, so each one sees every request.
import { randomUUID } from 'node:crypto';
import type { Consumer, Kafka } from 'kafkajs';
import { JobEvent } from '../common/jobs.js';
import { eventsTopic } from '../common/topics.js';

export class CancelListener {
  private readonly consumer: Consumer;

  constructor(
    kafka: Kafka,
    private readonly prefix: string,
    private readonly onCancel: (id: string, model: string) => void,
  ) {
    this.consumer = kafka.consumer({ groupId: `${prefix}-cancels-${randomUUID()}`, maxWaitTimeInMs: 250 });
  }

  async start(): Promise<void> {
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: eventsTopic(this.prefix), fromBeginning: false });
    await this.consumer.run({
      eachMessage: async ({ message }) => {
        const event = JobEvent.safeParse(safeJson(message.value));
        if (event.success && event.data.type === 'cancel_requested') this.onCancel(event.data.id, event.data.model_name);
      },
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }
}

function safeJson(value: Buffer | null): unknown {
  try {
    return JSON.parse(String(value));
  } catch {
    return undefined;
  }
}
