// Everything the routes need, built from the config in one place. createServices makes the
// clients without touching the network; prepareStorage/prepareKafka create the bucket and
// topics and connect, and stopServices lets go of them. main.ts and the tests call these.
import type { Admin, Kafka } from 'kafkajs';
import type { ApiConfig } from '../common/config.js';
import { createKafka, ensureTopics } from '../common/kafka.js';
import type { Logger } from '../common/logger.js';
import { RecordStore } from '../common/records.js';
import { TERMINAL } from '../common/jobs.js';
import { JOBS_PREFIX, ObjectStore } from '../common/storage.js';
import { allTopics, eventsTopic } from '../common/topics.js';
import { QueueDepth } from '../common/depth.js';
import { QueueAge } from '../common/age.js';
import { dependencyCheck, type DependencyStates } from './readiness.js';
import { QueuePositions } from '../common/position.js';
import { QueueView } from './queue.js';
import { StandingWatch } from './standings.js';
import { EventHub } from './hub.js';
import { IdempotencyStore } from './idempotency.js';
import { ImageNormaliser } from './image.js';
import { Intake } from './intake.js';
import { Sweeper } from './sweeper.js';
import { moveFlatEntries } from './listlayout.js';
import { TenantStore } from '../common/tenants.js';
import { authRequired } from './auth.js';
import { EndingsFollower } from './endings.js';
import { Limits } from './limits.js';
import { UploadBudget } from './upload.js';
import { KeyStore } from '../common/keys.js';
import { Publisher } from '../common/publisher.js';
import { createRegistry } from '../common/metrics.js';
import { familyOf, type ModelEntry } from '../common/models.js';
import { rulesFor, type ModelRules } from '../common/params.js';
import type { Registry } from 'prom-client';
import { ModelAvailability } from './availability.js';
import { apiMetrics, type ApiMetrics } from './metrics.js';

export interface Services {
  config: ApiConfig;
  log: Logger;
  models: string[];
  /** What each model takes (its family's rules), by name. */
  rules: Map<string, ModelRules>;
  store: ObjectStore;
  records: RecordStore;
  kafka: Kafka;
  admin: Admin;
  publisher: Publisher;
  hub: EventHub;
  depth: QueueDepth;
  /** Queued jobs' positions and estimated times, models' queued and running jobs and pace. */
  queue: QueueView;
  /** The event streams' shared poll of their queued jobs' standings. */
  standings: StandingWatch;
  availability: ModelAvailability;
  images: ImageNormaliser;
  intake: Intake;
  sweeper: Sweeper;
  tenants: TenantStore;
  /** API keys; undefined without AUTH_PEPPER (then no key can be checked). */
  keys: KeyStore | undefined;
  limits: Limits;
  endings: EndingsFollower;
  /** The memory that uploads in progress share. */
  uploads: UploadBudget;
  /** What GET /readyz reports: each dependency 'ok' or why not. */
  dependencies: () => Promise<DependencyStates>;
  registry: Registry;
  metrics: ApiMetrics;
}

export function createServices(config: ApiConfig, entries: ModelEntry[], log: Logger): Services {
  const models = entries.map((entry) => entry.name);
  const rules = new Map(entries.map((entry) => [entry.name, rulesFor(entry.name, familyOf(entry))]));
  const store = new ObjectStore(config);
  const records = new RecordStore(store);
  const kafka = createKafka(config, `${config.KAFKA_CLIENT_ID}-api`, log);
  const admin = kafka.admin();
  const publisher = new Publisher(kafka, config.TOPIC_PREFIX);
  const hub = new EventHub(kafka, { topic: eventsTopic(config.TOPIC_PREFIX), bufferLimit: config.SSE_CLIENT_BUFFER, log, records });
  const images = new ImageNormaliser({
    maxSide: config.MAX_IMAGE_SIDE,
    maxPixels: config.MAX_IMAGE_PIXELS,
    concurrency: config.IMAGE_CONCURRENCY,
  });
  const claims = new IdempotencyStore(store, config.TOPIC_PREFIX);
  const tenants = new TenantStore(store);
  const sweeper = new Sweeper({
    store,
    records,
    claims,
    tenants,
    log,
    intervalMs: config.SWEEP_INTERVAL_MS,
    graceMs: config.ORPHAN_GRACE_MS,
    retentionDays: config.RETENTION_DAYS,
    writeTimeoutMs: config.DEPENDENCY_TIMEOUT_MS,
  });
  const intake = new Intake({
    store,
    records,
    publisher,
    claims,
    sweeper,
    topicPrefix: config.TOPIC_PREFIX,
    timeoutMs: config.DEPENDENCY_TIMEOUT_MS,
    log,
  });
  const depth = new QueueDepth(admin, config.TOPIC_PREFIX, models);
  const queue = new QueueView({ positions: new QueuePositions(admin, depth, 1000, { settleMs: 2 * config.DEPENDENCY_TIMEOUT_MS }), depth, store, models, log });
  const standings = new StandingWatch(queue);
  const availability = new ModelAvailability(store, models);
  const keys = config.AUTH_PEPPER ? new KeyStore(store, config.AUTH_PEPPER) : undefined;
  const limits = new Limits({ config, depth, log });
  const endings = new EndingsFollower(kafka, config.TOPIC_PREFIX, limits);
  const uploads = new UploadBudget(config.UPLOAD_MEMORY_BYTES);
  const dependencies = dependencyCheck({ admin, store, limits, config, withKeys: authRequired(config) });
  const ages = new QueueAge(depth, (topic, time) => admin.fetchTopicOffsetsByTimestamp(topic, time));
  const registry = createRegistry('api');
  const metrics = apiMetrics(registry, { ages: () => ages.get(), dependencies });
  return { config, log, models, rules, store, records, kafka, admin, publisher, hub, depth, queue, standings, availability, images, intake, sweeper, tenants, keys, limits, endings, uploads, dependencies, registry, metrics };
}

export async function prepareStorage(services: Services): Promise<void> {
  await services.store.ensureBucket();
  await applyRetention(services);
  services.sweeper.start();
  moveOldListEntries(services);
}

/** Job-list entries of the layout before folders, moved in the background (api/listlayout.ts). */
function moveOldListEntries({ store, records, log }: Services): void {
  moveFlatEntries(store, records)
    .then((moved) => moved && log.info({ entries: moved }, 'job-list entries moved into their folders'))
    .catch((error: unknown) => log.warn({ err: error }, 'job-list entries not moved; the next start tries again'));
}

/** Days after which the bucket deletes whatever of a job is left (tombstones, strays): long after any retention. */
const LIFECYCLE_MARGIN_DAYS = 30;

/** The sweep expires jobs on time; the bucket's own lifecycle rule removes their tombstones later. */
async function applyRetention({ store, tenants, config, log }: Services): Promise<void> {
  const longest = Math.max(config.RETENTION_DAYS, ...(await tenants.retentions()).values());
  await store.expireAfter(JOBS_PREFIX, longest + LIFECYCLE_MARGIN_DAYS).catch((error: unknown) => {
    log.warn({ err: error }, 'the bucket refused a lifecycle rule; the sweep alone expires jobs');
  });
}

/** Creates the topics, connects the producer and starts the events consumer. */
export async function prepareKafka(services: Services): Promise<void> {
  const { admin, config, models, publisher, hub } = services;
  await admin.connect();
  await ensureTopics(admin, allTopics(config.TOPIC_PREFIX, models), config.TOPIC_PARTITIONS);
  await publisher.connect();
  await hub.start();
  // Per-key limits exist only with keys: then Redis holds their counters and endings free their slots.
  if (authRequired(config)) {
    await services.limits.connect();
    await services.endings.start();
    reconcileSlots(services);
  }
}

/**
 * Every SWEEP_INTERVAL_MS one replica frees the concurrency slots of jobs that are no longer
 * live, so a missed ending holds a key's slot for one interval, not for the slot's 24 h age limit.
 */
function reconcileSlots({ config, limits, records }: Services): void {
  if (!config.SWEEP_INTERVAL_MS) return;
  const isLive = async (id: string) => {
    const record = await records.get(id, AbortSignal.timeout(config.DEPENDENCY_TIMEOUT_MS));
    return record !== undefined && !TERMINAL.has(record.status);
  };
  // A reservation lives while its upload is read: never longer than a whole request may take.
  const reservationMaxAgeMs = config.HTTP_REQUEST_TIMEOUT_MS + 2 * config.DEPENDENCY_TIMEOUT_MS;
  limits.reconcileEvery(config.SWEEP_INTERVAL_MS, isLive, reservationMaxAgeMs);
}

/** Ends the SSE streams (which would otherwise hold the server open) and stops the sweeps. */
export async function stopStreams(services: Services): Promise<void> {
  services.sweeper.stop();
  await services.hub.close().catch((error: unknown) => services.log.warn({ err: error }, 'the events consumer did not stop cleanly'));
}

/** Disconnects from Kafka, storage and Redis, once no request needs them; each step runs even if another fails. */
export async function stopServices(services: Services): Promise<void> {
  const steps = [services.publisher.disconnect(), services.admin.disconnect(), services.endings.stop()];
  const failed = (await Promise.allSettled(steps)).filter((step) => step.status === 'rejected');
  if (failed.length) services.log.warn({ failures: failed.length }, 'some clients did not disconnect cleanly');
  services.store.close();
  services.limits.close();
}
