// Fans the events topic out to SSE streams. Each API replica runs one consumer in a group of
// its own (so every replica sees every event), starting at the latest offset, committing
// nothing (a replica that restarts only needs events from then on), and hands each event to
// the subscriptions of its job id in memory.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Consumer, Kafka } from 'kafkajs';
import { JobEvent, parseValue } from '../common/jobs.js';
import { endingOf } from '../common/lifecycle.js';
import type { RecordStore } from '../common/records.js';
import type { Logger } from '../common/logger.js';

/** Where an event sits in the events topic; the SSE `id:` is `<partition>-<offset>`. */
export interface Position {
  partition: number;
  offset: number;
}

/** An event with its place in the topic; none for an ending read from the record instead. */
export interface PositionedEvent {
  event: JobEvent;
  position: Position | undefined;
}

export const formatPosition = ({ partition, offset }: Position) => `${partition}-${offset}`;

export function parsePosition(text: string | undefined): Position | undefined {
  const match = /^(\d{1,9})-(\d{1,18})$/.exec(text?.trim() ?? '');
  return match ? { partition: Number(match[1]), offset: Number(match[2]) } : undefined;
}

/** True when `position` comes after `last` (events of one job share a partition, since the key is the job id). */
export const isAfter = (position: Position | undefined, last: Position | undefined) =>
  !position || !last || position.partition !== last.partition || position.offset > last.offset;

/** The events of one job for one SSE stream, buffered up to a limit; a client that falls behind is dropped. */
export class Subscription implements AsyncIterable<PositionedEvent> {
  private readonly queue: PositionedEvent[] = [];
  private waiter: ((positioned: PositionedEvent | undefined) => void) | undefined;
  private closed = false;
  /** Why the subscription ended: 'overflow' when the client read too slowly. */
  endReason: 'closed' | 'overflow' | undefined;

  constructor(
    readonly jobId: string,
    private readonly limit: number,
    private readonly onClose: (subscription: Subscription) => void,
  ) {}

  push(positioned: PositionedEvent): void {
    if (this.closed) return;
    if (this.waiter) {
      const wake = this.waiter;
      this.waiter = undefined;
      wake(positioned);
    } else if (this.queue.length >= this.limit) {
      this.close('overflow');
    } else {
      this.queue.push(positioned);
    }
  }

  close(reason: 'closed' | 'overflow' = 'closed'): void {
    if (this.closed) return;
    this.closed = true;
    this.endReason = reason;
    this.queue.length = 0;
    this.onClose(this);
    this.waiter?.(undefined);
    this.waiter = undefined;
  }

  /** The next event, or undefined once closed. */
  next(): Promise<PositionedEvent | undefined> {
    const queued = this.queue.shift();
    if (queued || this.closed) return Promise.resolve(queued);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  async *[Symbol.asyncIterator](): AsyncIterator<PositionedEvent> {
    for (;;) {
      const positioned = await this.next();
      if (!positioned) return;
      yield positioned;
    }
  }
}

export interface HubOptions {
  topic: string;
  /** Events buffered per subscription before the client is dropped. */
  bufferLimit: number;
  log: Logger;
  /** Where a followed job's ending is read when its events do not come. */
  records: Pick<RecordStore, 'get'>;
  /** A followed job with no event for this long has its record read again (default 5 s). */
  quietMs?: number;
}

export class EventHub {
  private readonly consumer: Consumer;
  private readonly subscriptions = new Map<string, Set<Subscription>>();
  /** When each followed job last had an event or a look at its record. */
  private readonly lastHeard = new Map<string, number>();
  private readonly sweeper: NodeJS.Timeout;
  private joins = 0;

  constructor(
    kafka: Kafka,
    private readonly options: HubOptions,
    groupId = `${options.topic}-api-${hostname()}-${randomBytes(4).toString('hex')}`,
  ) {
    // A short fetch wait keeps start-up and shutdown quick; a fetch returns at once when events arrive.
    this.consumer = kafka.consumer({ groupId, maxWaitTimeInMs: 500, retry: { retries: 10 } });
    const quietMs = options.quietMs ?? 5000;
    this.sweeper = setInterval(() => this.recheckQuiet(quietMs), Math.min(1000, quietMs)).unref();
  }

  /** Resolves once the consumer has joined and resolved its offsets, so later events reach subscribers. */
  async start(): Promise<void> {
    // Rejoining after an outage starts at the latest offset again: what was published meanwhile
    // is missed, so every followed job's record is read again.
    this.consumer.on(this.consumer.events.GROUP_JOIN, () => {
      if (this.joins++ > 0) for (const jobId of this.subscriptions.keys()) void this.recheck(jobId);
    });
    await this.consumer.connect();
    await this.consumer.subscribe({ topic: this.options.topic, fromBeginning: false });
    const fetched = new Promise<void>((resolve) => {
      const stop = this.consumer.on(this.consumer.events.FETCH, () => {
        stop();
        resolve();
      });
    });
    await this.consumer.run({
      autoCommit: false,
      eachMessage: async ({ partition, message }) => {
        // Events are keyed by job id: most concern jobs nobody follows here, and are not even parsed.
        const key = message.key?.toString();
        if (key !== undefined && !this.subscriptions.has(key)) return;
        this.dispatch(message.value, { partition, offset: Number(message.offset) });
      },
    });
    await fetched;
  }

  subscribe(jobId: string): Subscription {
    const subscription = new Subscription(jobId, this.options.bufferLimit, (s) => this.forget(s));
    const set = this.subscriptions.get(jobId) ?? new Set();
    set.add(subscription);
    this.subscriptions.set(jobId, set);
    if (!this.lastHeard.has(jobId)) this.lastHeard.set(jobId, Date.now());
    return subscription;
  }

  get size(): number {
    let count = 0;
    for (const set of this.subscriptions.values()) count += set.size;
    return count;
  }

  /** Ends every stream (their clients reconnect elsewhere), then leaves the group. */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    for (const set of [...this.subscriptions.values()]) for (const subscription of [...set]) subscription.close();
    await this.consumer.disconnect();
  }

  private dispatch(value: Buffer | null, position: Position): void {
    const parsed = parseValue(JobEvent, value);
    if (!parsed.success) {
      this.options.log.warn({ position: formatPosition(position) }, 'ignoring a malformed event');
      return;
    }
    this.deliver(parsed.data, position);
  }

  private deliver(event: JobEvent, position: Position | undefined): void {
    const set = this.subscriptions.get(event.id);
    if (!set) return;
    this.lastHeard.set(event.id, Date.now());
    for (const subscription of [...set]) subscription.push({ event, position });
  }

  private recheckQuiet(quietMs: number): void {
    const now = Date.now();
    for (const [jobId, heard] of this.lastHeard) {
      if (now - heard < quietMs) continue;
      this.lastHeard.set(jobId, now);
      void this.recheck(jobId);
    }
  }

  /** Ends the streams of a job whose record says it ended, when its terminal event did not arrive. */
  private async recheck(jobId: string): Promise<void> {
    try {
      const record = await this.options.records.get(jobId, AbortSignal.timeout(5000));
      const ending = record && endingOf(record);
      if (ending) this.deliver(ending, undefined);
    } catch (error) {
      this.options.log.debug({ err: error, job: jobId }, 'could not read a followed job');
    }
  }

  private forget(subscription: Subscription): void {
    const set = this.subscriptions.get(subscription.jobId);
    set?.delete(subscription);
    if (set && !set.size) {
      this.subscriptions.delete(subscription.jobId);
      this.lastHeard.delete(subscription.jobId);
    }
  }
}
