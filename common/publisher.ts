// A process' one Kafka producer (the API's and each consumer's): job messages, lifecycle
// events, cancel requests and dead letters, acks from all in-sync replicas, idempotent (no
// duplicates from its own retries).
//
// An idempotent producer keeps one request in flight per broker, so sends issued one by one
// queue behind each other's round trips. Messages that arrive while a request is in flight
// therefore wait and leave together in the next request: no added delay when idle, one round
// trip for many messages under load.
import { Partitioners, type ICustomPartitioner, type Kafka, type Message, type Producer, type RecordMetadata, type TopicMessages } from 'kafkajs';
import { DeadlineExceeded, race } from './deadline.js';
import type { CancelRequest, JobEvent } from './jobs.js';
import { cancelsTopic, EVENT_TYPE_HEADER, eventsTopic, NO_WEBHOOK, WEBHOOK_HEADER } from './topics.js';

/** Most messages in one request; they are small (a few hundred bytes each). */
const MAX_BATCH = 500;
/** Events whose send is remembered, so the same event published again is not sent twice (below). */
const RECENT_EVENTS = 4096;

/** Where the broker wrote a message: its partition and offset (a decimal string, as kafkajs gives offsets). */
export interface Placed {
  partition: number;
  offset: string;
}

interface Pending {
  topic: string;
  message: Message;
  signal: AbortSignal;
  resolve: (placed: Placed) => void;
  reject: (error: unknown) => void;
}

/**
 * kafkajs' default partitioner, noting the partition it picks for each message: the broker's
 * answer gives one base offset per partition, and a message's offset is that base plus its rank
 * among the request's messages for that partition.
 */
function notingPartitioner(chosen: WeakMap<Message, number>): ICustomPartitioner {
  return () => {
    const pick = Partitioners.DefaultPartitioner();
    return (args) => {
      const partition = pick(args);
      chosen.set(args.message, partition);
      return partition;
    };
  };
}

export class Publisher {
  private readonly producer: Producer;
  private connecting: Promise<void> | undefined;
  private pending: Pending[] = [];
  private sending = false;
  private readonly partitions = new WeakMap<Message, number>();
  /** The send of each recent event (by its JSON), in flight or acknowledged. */
  private readonly eventSends = new Map<string, Promise<Placed>>();

  constructor(
    kafka: Kafka,
    private readonly topicPrefix: string,
  ) {
    this.producer = kafka.producer({
      idempotent: true,
      maxInFlightRequests: 1,
      allowAutoTopicCreation: false,
      createPartitioner: notingPartitioner(this.partitions),
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

  /** Where `message` went, once the broker acknowledged it (acks=all); rejects when `signal` aborts first. */
  async send(topic: string, message: Message, signal: AbortSignal): Promise<Placed> {
    return race(this.enqueue(topic, message, signal), signal);
  }

  /** The message's acknowledgement; it is not sent if `signal` aborts before its request leaves, and is waited for if after. */
  private async enqueue(topic: string, message: Message, signal: AbortSignal): Promise<Placed> {
    await race(this.connect(), signal);
    const acknowledged = new Promise<Placed>((resolve, reject) => this.pending.push({ topic, message, signal, resolve, reject }));
    void this.drain();
    return acknowledged;
  }

  /**
   * An event, with its type also in a header (EVENT_TYPE_HEADER): a reader that wants some types
   * skips the rest unparsed. `webhook` false: the job has none, said in WEBHOOK_HEADER.
   * The same event published again while its send is in flight or after it was acknowledged joins
   * that send: a caller whose deadline passed while a broker failed over (its message written
   * after all) and who publishes again, as an outbox does, does not announce the job twice.
   */
  async publishEvent(event: JobEvent, signal: AbortSignal, webhook?: boolean): Promise<void> {
    const value = JSON.stringify(event);
    let sent = this.eventSends.get(value);
    if (!sent) {
      const headers = { [EVENT_TYPE_HEADER]: event.type, ...(webhook === false ? { [WEBHOOK_HEADER]: NO_WEBHOOK } : {}) };
      const sending = this.enqueue(eventsTopic(this.topicPrefix), { key: event.id, value, headers }, signal);
      sent = sending;
      sending.catch(() => {
        if (this.eventSends.get(value) === sending) this.eventSends.delete(value); // never written: the next publish sends it
      });
      this.eventSends.set(value, sending);
      if (this.eventSends.size > RECENT_EVENTS) this.eventSends.delete(this.eventSends.keys().next().value!);
    }
    await race(sent, signal);
  }

  async publishCancel(request: CancelRequest, signal: AbortSignal): Promise<void> {
    await this.send(cancelsTopic(this.topicPrefix), { key: request.id, value: JSON.stringify(request) }, signal);
  }

  async disconnect(): Promise<void> {
    await this.producer.disconnect();
  }

  /** Sends what is pending, one request at a time, until nothing is left. */
  private async drain(): Promise<void> {
    if (this.sending) return;
    this.sending = true;
    try {
      while (this.pending.length) await this.sendBatch(this.pending.splice(0, MAX_BATCH));
    } finally {
      this.sending = false;
    }
  }

  private async sendBatch(batch: Pending[]): Promise<void> {
    // A caller that already answered 503 must not have its message sent after all.
    const live = batch.filter((item) => !item.signal.aborted);
    for (const item of batch) if (item.signal.aborted) item.reject(new DeadlineExceeded('deadline exceeded'));
    if (!live.length) return;
    try {
      const written = await this.producer.sendBatch({ acks: -1, topicMessages: byTopic(live) });
      const places = placesOf(live, written, this.partitions);
      live.forEach((item, index) => item.resolve(places[index]!));
    } catch (error) {
      for (const item of live) item.reject(error);
    }
  }
}

/** Each item's place: its partition's base offset plus its rank among the batch's messages for that partition (sent in order). */
function placesOf(items: Pending[], written: RecordMetadata[], partitions: WeakMap<Message, number>): Placed[] {
  const base = new Map(written.map(({ topicName, partition, baseOffset }) => [`${topicName}/${partition}`, BigInt(baseOffset ?? '-1')]));
  const rank = new Map<string, bigint>();
  return items.map(({ topic, message }) => {
    const partition = partitions.get(message) ?? -1;
    const key = `${topic}/${partition}`;
    const index = rank.get(key) ?? 0n;
    rank.set(key, index + 1n);
    const first = base.get(key);
    return { partition, offset: first === undefined || first < 0n ? '-1' : String(first + index) };
  });
}

function byTopic(items: Pending[]): TopicMessages[] {
  const topics = new Map<string, Message[]>();
  for (const { topic, message } of items) {
    const messages = topics.get(topic);
    if (messages) messages.push(message);
    else topics.set(topic, [message]);
  }
  return [...topics].map(([topic, messages]) => ({ topic, messages }));
}
