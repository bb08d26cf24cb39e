// A consumer process' parts, built from its config: one feed (Kafka consumer group) and
// one runner pool per model, the cancel listener, the metrics server. createConsumer does no
// I/O; start() connects and begins, stop() finishes in-flight jobs and lets go, so tests run
// a consumer in-process as they run the API.
import type { Server } from 'node:http';
import { resolve } from 'node:path';
import type { ConsumerConfig } from '../common/config.js';
import { QueueDepth } from '../common/depth.js';
import { createKafka, ensureTopics } from '../common/kafka.js';
import type { Logger } from '../common/logger.js';
import { createRegistry, metricsUrlOf, serveMetrics } from '../common/metrics.js';
import { familyOf, type ModelEntry } from '../common/models.js';
import { Publisher } from '../common/publisher.js';
import { RecordStore } from '../common/records.js';
import { ObjectStore } from '../common/storage.js';
import { checkSource, writeModelStatus } from '../common/sources.js';
import { allTopics } from '../common/topics.js';
import { WorkerStore } from '../common/workers.js';
import { CancelListener } from './cancels.js';
import { compileCacheSetup } from './compilecache.js';
import { ModelFeed } from './feed.js';
import { consumerMetrics, type ConsumerMetrics } from './metrics.js';
import { RunnerPool } from './pool.js';
import { Gateway } from './remote/gateway.js';
import { Verifier } from './remote/verify.js';
import { Runner } from './runner.js';
import { consumerName, Throughput } from './throughput.js';

export interface ConsumerOptions {
  /** The models this process serves. */
  models: ModelEntry[];
  /** Every model of model_names.txt: the process creates all their topics. */
  listed: ModelEntry[];
  logger: Logger;
}

export interface Consumer {
  feeds: ModelFeed[];
  start(): Promise<void>;
  /** Finishes in-flight jobs (up to SHUTDOWN_GRACE_MS), commits, disconnects. */
  stop(): Promise<void>;
  /** The metrics server's address once started. */
  metricsUrl(): string | undefined;
  /** Where remote workers connect, when WORKER_GATEWAY is on and the consumer started. */
  gatewayUrl(): string | undefined;
}

function runnerPool(config: ConsumerConfig, model: ModelEntry, store: ObjectStore, logger: Logger, metrics: ConsumerMetrics): RunnerPool {
  const extraArgs = [
    ...(config.RUNNER_MAX_BATCH ? ['--max-batch', String(config.RUNNER_MAX_BATCH)] : []),
    ...(config.RUNNER_BENCH_LOG ? ['--bench-log', resolve(config.RUNNER_BENCH_LOG)] : []),
  ];
  // One runner per listed GPU; without RUNNER_GPUS one runner sees every device.
  const gpus: (string | undefined)[] = config.RUNNER_LOCAL === 'off' ? [] : config.RUNNER_GPUS.length ? config.RUNNER_GPUS : [undefined];
  const runners = gpus.map(
    (gpu) =>
      new Runner({
        model: model.name,
        source: model.source,
        tuning: model.tuning,
        family: familyOf(model) ?? undefined,
        dtype: model.dtype,
        python: resolve(config.RUNNER_PYTHON),
        cwd: resolve(config.RUNNER_DIR),
        device: config.RUNNER_DEVICE,
        stallMs: config.RUNNER_STALL_MS,
        startTimeoutMs: config.RUNNER_START_TIMEOUT_MS,
        logger: gpu === undefined ? logger : logger.child({ gpu }),
        extraArgs,
        env: gpu === undefined ? {} : { CUDA_VISIBLE_DEVICES: gpu },
        compileCache: compileCacheSetup(config, model, store, gpu),
        standby: config.RUNNER_STANDBY === 'on',
        onReady: (info) => metrics.runnerStarted?.(model.name, info.start_seconds),
        onRestart: () => metrics.runnerRestarted?.(model.name),
      }),
  );
  return new RunnerPool(runners);
}

/**
 * The feeds whose model's source can be served. Each model's availability is written for the API,
 * which refuses jobs for an unavailable one; those already queued wait for a fixed source.
 */
async function servable(feeds: ModelFeed[], models: ModelEntry[], store: ObjectStore, logger: Logger): Promise<ModelFeed[]> {
  const checks = new Map(models.map((model) => [model.name, checkSource(model)]));
  await Promise.all([...checks].map(([name, check]) => writeModelStatus(store, name, check)));
  for (const [name, check] of checks) {
    if (!check.ok) logger.error({ model: name, reason: check.reason }, `model ${name} cannot be served: ${check.reason}`);
  }
  return feeds.filter((feed) => checks.get(feed.name)?.ok);
}

export function createConsumer(config: ConsumerConfig, { models, listed, logger }: ConsumerOptions): Consumer {
  const kafka = createKafka(config, `${config.KAFKA_CLIENT_ID}-consumer`, logger);
  const store = new ObjectStore(config);
  const records = new RecordStore(store);
  const publisher = new Publisher(kafka, config.TOPIC_PREFIX);
  const admin = kafka.admin();
  const registry = createRegistry('consumer');
  const depth = new QueueDepth(admin, config.TOPIC_PREFIX, models.map((m) => m.name));
  const metrics = consumerMetrics(registry, () => depth.get(), models.map((m) => m.name));
  const pools = new Map(models.map((model) => [model.name, runnerPool(config, model, store, logger.child({ model: model.name }), metrics)]));
  const gateway =
    config.WORKER_GATEWAY === 'on'
      ? new Gateway({
          host: config.WORKER_GATEWAY_HOST, port: config.WORKER_GATEWAY_PORT, workers: new WorkerStore(store), pools,
          leaseMs: config.WORKER_LEASE_MS, maxStrikes: config.WORKER_MAX_STRIKES, logger: logger.child({ component: 'gateway' }), registry,
        })
      : undefined;
  const name = consumerName();
  const paces = new Map(models.map((model) => [model.name, new Throughput({ store, model: model.name, consumer: name, logger })]));
  const feeds = models.map((model) => {
    const log = logger.child({ model: model.name });
    const pool = pools.get(model.name)!;
    const verifier = new Verifier(pool, model.verify ?? { kind: 'off' }, gateway?.ledgers, config.VERIFY_PSNR_DB, log);
    const throughput = paces.get(model.name);
    return new ModelFeed({ kafka, publisher, config, store, records, pool, verifier, model, logger: log, metrics, throughput });
  });
  const cancels = new CancelListener(kafka, config.TOPIC_PREFIX, (id, model) => feeds.find((feed) => feed.name === model)?.cancel(id));
  let metricsServer: Server | undefined;
  let started = false;
  /** The feeds of the models whose source can be served (checked at start). */
  let serving: ModelFeed[] = [];

  return {
    feeds,
    async start() {
      await store.ensureBucket();
      await admin.connect();
      await ensureTopics(admin, allTopics(config.TOPIC_PREFIX, listed.map((e) => e.name)), config.TOPIC_PARTITIONS);
      await publisher.connect();
      await cancels.start();
      serving = await servable(feeds, models, store, logger);
      await Promise.all(serving.map((feed) => feed.start()));
      for (const feed of serving) paces.get(feed.name)?.start();
      await gateway?.start();
      // Last: the metrics endpoint answering is the consumer's readiness signal (probes, tests).
      metricsServer = await serveMetrics(registry, config.CONSUMER_METRICS_HOST, config.CONSUMER_METRICS_PORT);
      started = true;
      logger.info({ models: models.map((m) => m.name), metrics: this.metricsUrl(), gateway: this.gatewayUrl() }, 'consumers running');
    },
    async stop() {
      await Promise.all(serving.map((feed) => feed.stop(config.SHUTDOWN_GRACE_MS)));
      await Promise.all(serving.map((feed) => paces.get(feed.name)?.stop()));
      await gateway?.stop();
      await cancels.stop();
      await publisher.disconnect();
      await admin.disconnect();
      metricsServer?.close();
      store.close();
    },
    gatewayUrl() {
      return gateway && started ? gateway.url() : undefined;
    },
    metricsUrl() {
      return metricsUrlOf(metricsServer, config.CONSUMER_METRICS_HOST);
    },
  };
}
