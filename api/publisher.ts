// The API's one Kafka producer: job messages and lifecycle events, acks from all in-sync
// replicas, idempotent (no duplicates from its own retries).
import type { Kafka, Message, Producer } from 'kafkajs';
import { eventsTopic } from '../common/topics.js';
import type { JobEvent } from '../common/jobs.js';
import { race } from './dependency.js';

export class Publisher {
  private readonly producer: Producer;
  private connecting: Promise<void> | undefined;

  constructor(
    kafka: Kafka,
    private readonly topicPrefix: string,
  ) {
    this.producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      // Few, short retries: the caller's deadline answers 503 long before kafkajs would give up by default.
      retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1000 },
    });
  }

  /** Connects once; a failed attempt is forgotten so the next send tries again (Kafka may come back). */
  connect(): Promise<void> {
    this.connecting ??= this.producer.connect().catch((error: unknown) => {
      this.connecting = undefined;
      throw error;
    });
    return this.connecting;
  }

  /** Resolves once the broker acknowledged `message` (acks=all), or rejects when `signal` aborts first. */
  async send(topic: string, message: Message, signal: AbortSignal): Promise<void> {
    await race(this.connect(), signal);
    await race(this.producer.send({ topic, acks: -1, messages: [message] }), signal);
  }

  async publishEvent(event: JobEvent, signal: AbortSignal): Promise<void> {
    await this.send(eventsTopic(this.topicPrefix), { key: event.id, value: JSON.stringify(event) }, signal);
  }

  async disconnect(): Promise<void> {
    await this.producer.disconnect();
  }
}
