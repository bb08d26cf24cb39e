// Follows the cancels topic and passes each request to the model's feed. Every consumer process
// reads it in a group of its own, so each one sees every request; progress events, which
// it does not need, live on another topic. It reads from the topic's start (compacted, kept a
// day): a job canceled while queued, before this process started, is known as canceled when
// its message comes, so its record is read rather than taken from the message.
import { randomUUID } from 'node:crypto';
import type { Consumer, Kafka } from 'kafkajs';
import { CancelRequest, parseValue } from '../common/jobs.js';
import { cancelsTopic } from '../common/topics.js';

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
    await this.consumer.subscribe({ topic: cancelsTopic(this.prefix), fromBeginning: true });
    await this.consumer.run({
      eachMessage: async ({ message }) => {
        const request = parseValue(CancelRequest, message.value);
        if (request.success) this.onCancel(request.data.id, request.data.model_name);
      },
    });
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }
}
