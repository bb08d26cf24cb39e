// The webhook dispatcher's parts, built from its config: one Kafka consumer group
// (<prefix>-webhooks) on the events topic and the retry topics, the Courier that sends, and
// the producer that schedules retries. createDispatcher does no I/O; start() creates the topics
// and begins, stop() lets go, so tests run it in-process and spawn dispatcher/main.ts only to
// kill it.
//
// Durability: an offset is committed only once its delivery succeeded, gave up, or sits in the
// next retry topic (acks=all). A retry topic is read in order; a delivery not yet due pauses
// its partition and seeks back to itself, so it is read again when due, by whichever member
// owns the partition then. A SIGKILL therefore loses nothing: what was not committed is read again.
import type { Server } from 'node:http';
import type { Admin, EachBatchPayload, KafkaMessage } from 'kafkajs';
import pLimit from 'p-limit';
import type { DispatcherConfig } from '../common/config.js';
import { DeliveryLogStore } from '../common/deliveries.js';
import { lag } from '../common/depth.js';
import { JobEvent, parseValue } from '../common/jobs.js';
import { createKafka, ensureTopics } from '../common/kafka.js';
import type { Logger } from '../common/logger.js';
import { createRegistry, metricsUrlOf, serveMetrics } from '../common/metrics.js';
import { Publisher } from '../common/publisher.js';
import { RecordStore } from '../common/records.js';
import { ObjectStore } from '../common/storage.js';
import { TenantStore } from '../common/tenants.js';
import { eventsTopic, NO_WEBHOOK, WEBHOOK_HEADER, webhookRetryTopic, webhookRetryTopics } from '../common/topics.js';
import { DeliveryMessage } from '../common/webhooks.js';
import { WebhookClient, type Resolver } from './client.js';
import { ThrottledCommits } from './commits.js';
import { Courier } from './courier.js';
import { dispatcherMetrics } from './metrics.js';

/** A paused retry partition is looked at again at least this often (a long wait is cut in pieces). */
const MAX_PAUSE_MS = 60_000;
const RETRY_SEND_TIMEOUT_MS = 30_000;
const COMMIT_INTERVAL_MS = 1000;

export interface DispatcherOptions {
  logger: Logger;
  /** Name resolution for the SSRF check; tests stub it. */
  resolve?: Resolver;
  random?: () => number;
}

export interface Dispatcher {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** http://host:port/metrics once started. */
  metricsUrl(): string | undefined;
}

type Work = { kind: 'event'; event: JobEvent } | { kind: 'delivery'; delivery: DeliveryMessage };
interface Item {
  message: KafkaMessage;
  work: Work | undefined;
}

export const dispatcherGroup = (prefix: string) => `${prefix}-webhooks`;

/** A group that never committed on `topic` starts at its end: a new dispatcher does not replay old events. */
async function startAtLatest(admin: Admin, groupId: string, topic: string, logger: Logger): Promise<void> {
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  if (committed?.partitions.some((partition) => partition.offset !== '-1')) return;
  // Another replica may have joined meanwhile; then it chose for the group.
  await admin.resetOffsets({ groupId, topic, earliest: false }).catch((error: unknown) => logger.warn({ err: error }, 'could not set the events offsets'));
}

/** Deliveries waiting in each retry topic: what the group has not committed there, less what this member did since its last commit. */
export async function retryBacklog(admin: Admin, groupId: string, topics: readonly string[], done?: Pick<ThrottledCommits, 'nextOffset'>): Promise<Map<string, number>> {
  const [committed, ...offsets] = await Promise.all([admin.fetchOffsets({ groupId, topics: [...topics] }), ...topics.map((topic) => admin.fetchTopicOffsets(topic))]);
  const progress = (topic: string, partitions: { partition: number; offset: string }[]) =>
    partitions.map(({ partition, offset }) => {
      const known = done?.nextOffset(topic, partition);
      return { partition, offset: known !== undefined && BigInt(known) > BigInt(offset) ? known : offset };
    });
  return new Map(topics.map((topic, i) => [topic, lag(offsets[i]!, progress(topic, committed.find((entry) => entry.topic === topic)?.partitions ?? []))]));
}

export function createDispatcher(config: DispatcherConfig, { logger, resolve, random }: DispatcherOptions): Dispatcher {
  const prefix = config.TOPIC_PREFIX;
  const events = eventsTopic(prefix);
  const groupId = dispatcherGroup(prefix);
  const kafka = createKafka(config, `${config.KAFKA_CLIENT_ID}-dispatcher`, logger);
  const store = new ObjectStore(config);
  const admin = kafka.admin();
  const publisher = new Publisher(kafka, prefix);
  const registry = createRegistry('dispatcher');
  const retryTopics = webhookRetryTopics(prefix);
  const consumer = kafka.consumer({ groupId, sessionTimeout: config.KAFKA_SESSION_TIMEOUT_MS, heartbeatInterval: 1000, maxWaitTimeInMs: 250 });
  const commits = new ThrottledCommits(consumer, COMMIT_INTERVAL_MS, logger);
  consumer.on(consumer.events.GROUP_JOIN, () => commits.forget());
  const metrics = dispatcherMetrics(registry, () => retryBacklog(admin, groupId, retryTopics, commits), retryTopics);
  let metricsServer: Server | undefined;
  const courier = new Courier({
    records: new RecordStore(store),
    deliveries: new DeliveryLogStore(store),
    tenants: new TenantStore(store),
    client: new WebhookClient({ allowPrivate: config.WEBHOOK_ALLOW_PRIVATE, resolve }),
    baseUrl: config.PUBLIC_BASE_URL?.replace(/\/+$/, '') ?? `http://127.0.0.1:${config.API_PORT}`,
    retryBaseMs: config.WEBHOOK_RETRY_BASE_MS,
    logger,
    random,
    metrics,
  });
  const limit = pLimit(config.WEBHOOK_CONCURRENCY);
  const timers = new Set<NodeJS.Timeout>();

  function parse(topic: string, message: KafkaMessage): Work | undefined {
    // The event of a job without a webhook asks for no delivery: skipped unread.
    if (topic === events && message.headers?.[WEBHOOK_HEADER]?.toString() === NO_WEBHOOK) return undefined;
    const parsed = topic === events ? parseValue(JobEvent, message.value) : parseValue(DeliveryMessage, message.value);
    if (parsed.success) return topic === events ? { kind: 'event', event: parsed.data as JobEvent } : { kind: 'delivery', delivery: parsed.data as DeliveryMessage };
    logger.warn({ topic, offset: message.offset, problem: parsed.problem }, 'skipping a message that does not parse');
    return undefined;
  }

  async function handle(work: Work): Promise<void> {
    const delivery = work.kind === 'event' ? await courier.fromEvent(work.event) : work.delivery;
    if (!delivery) return;
    const retry = await courier.attempt(delivery);
    if (!retry) return;
    const value = JSON.stringify(retry);
    const topic = webhookRetryTopic(prefix, retry.attempts);
    await publisher.send(topic, { key: retry.job_id, value }, AbortSignal.timeout(RETRY_SEND_TIMEOUT_MS));
    metrics.retried(topic);
  }

  /** Items of one job in order (its events must not overtake each other), jobs side by side. */
  async function handleAll(items: Item[]): Promise<void> {
    const byJob = new Map<string, Item[]>();
    for (const item of items) {
      const key = String(item.message.key);
      byJob.set(key, [...(byJob.get(key) ?? []), item]);
    }
    const runs = [...byJob.values()].map(async (group) => {
      for (const { work } of group) if (work) await limit(() => handle(work));
    });
    const failed = (await Promise.allSettled(runs)).find((run) => run.status === 'rejected');
    // Nothing of the batch is committed: kafkajs reads it again, and what was done is skipped then.
    if (failed) throw failed.reason;
  }

  /** Reads the partition again from `item` once it is due; nothing after it is due earlier but for jitter. */
  function waitFor(payload: EachBatchPayload, item: Item, dueAt: number): void {
    const { topic, partition } = payload.batch;
    consumer.seek({ topic, partition, offset: item.message.offset });
    const resume = payload.pause();
    const timer = setTimeout(() => {
      timers.delete(timer);
      resume();
    }, Math.min(Math.max(0, dueAt - Date.now()), MAX_PAUSE_MS));
    timers.add(timer);
  }

  async function eachBatch(payload: EachBatchPayload): Promise<void> {
    const { batch, resolveOffset, heartbeat, isRunning, isStale } = payload;
    // Deliveries take up to 10 s each: the group must keep hearing from us meanwhile.
    const beat = setInterval(() => void heartbeat().catch(() => undefined), 1000);
    try {
      const items: Item[] = batch.messages.map((message) => ({ message, work: parse(batch.topic, message) }));
      const now = Date.now();
      const dueAt = (item: Item) => (item.work?.kind === 'delivery' ? Date.parse(item.work.delivery.due_at) : 0);
      const waiting = items.findIndex((item) => dueAt(item) > now);
      const due = waiting < 0 ? items : items.slice(0, waiting);
      await handleAll(due);
      if (due.length) {
        resolveOffset(due.at(-1)!.message.offset);
        commits.done(batch.topic, batch.partition, due.at(-1)!.message.offset);
      }
      if (waiting >= 0 && isRunning() && !isStale()) waitFor(payload, items[waiting]!, dueAt(items[waiting]!));
    } finally {
      clearInterval(beat);
    }
  }

  const metricsUrl = () => metricsUrlOf(metricsServer, config.DISPATCHER_METRICS_HOST);

  return {
    async start() {
      await store.ensureBucket();
      await admin.connect();
      await ensureTopics(admin, [events, ...retryTopics], config.TOPIC_PARTITIONS);
      await startAtLatest(admin, groupId, events, logger);
      await publisher.connect();
      await consumer.connect();
      await consumer.subscribe({ topics: [events], fromBeginning: false });
      await consumer.subscribe({ topics: retryTopics, fromBeginning: true });
      metricsServer = await serveMetrics(registry, config.DISPATCHER_METRICS_HOST, config.DISPATCHER_METRICS_PORT);
      await consumer.run({ partitionsConsumedConcurrently: 8, eachBatchAutoResolve: false, autoCommit: false, eachBatch });
      logger.info({ group: groupId, allow_private: config.WEBHOOK_ALLOW_PRIVATE, metrics: metricsUrl() }, 'webhook dispatcher running');
    },
    async stop() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      await commits.close();
      await consumer.disconnect();
      await publisher.disconnect();
      await admin.disconnect();
      store.close();
      metricsServer?.close();
    },
    metricsUrl,
  };
}
