// Publishes lifecycle events to img2img.events, keyed by job id so one job's events
// stay in order on one partition.
import type { Producer } from 'kafkajs';
import { eventsTopic } from './topics.js';
import type { JobEvent } from './jobs.js';

export type EventInput = Omit<JobEvent, 'v' | 'at'>;

export class EventPublisher {
  constructor(
    private readonly producer: Producer,
    private readonly prefix: string,
  ) {}

  async publish(...events: EventInput[]): Promise<void> {
    const at = new Date().toISOString();
    await this.producer.send({
      topic: eventsTopic(this.prefix),
      acks: -1,
      messages: events.map((event) => ({ key: event.id, value: JSON.stringify({ v: 1, at, ...event }) })),
    });
  }
}
