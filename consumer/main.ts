// Composition root of a consumer process: one worker and one runner per model.
//   npm run consumer -- [--models tiny,other]
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig } from '../common/config.js';
import { createKafka, ensureTopics } from '../common/kafka.js';
import { createLogger } from '../common/logger.js';
import { readModelNames } from '../common/models.js';
import { Publisher } from '../common/publisher.js';
import { RecordStore } from '../common/records.js';
import { createS3, ObjectStore } from '../common/storage.js';
import { allTopics } from '../common/topics.js';
import { QueueDepth } from '../common/depth.js';
import { createRegistry, serveMetrics } from '../common/metrics.js';
import { CancelListener } from './cancels.js';
import { consumerMetrics } from './metrics.js';
import { RunnerPool } from './pool.js';
import { Runner } from './runner.js';
import { ModelWorker } from './worker.js';

const { values: args } = parseArgs({
  options: { models: { type: 'string', short: 'm' }, help: { type: 'boolean', short: 'h' } },
});
if (args.help) {
  console.log('usage: npm run consumer -- [--models a,b]   (default: every model of MODEL_NAMES_FILE)');
  process.exit(0);
}

const config = loadConfig(process.env);
const logger = createLogger('consumer', config.LOG_LEVEL);
const listed = await readModelNames(config.MODEL_NAMES_FILE);
const wanted = args.models?.split(',').map((name) => name.trim()) ?? listed.map((entry) => entry.name);
const unknown = wanted.filter((name) => !listed.some((entry) => entry.name === name));
if (unknown.length) {
  logger.fatal(`--models names ${unknown.join(', ')}, not in ${config.MODEL_NAMES_FILE} (${listed.map((e) => e.name).join(', ')})`);
  process.exit(2);
}
const models = listed.filter((entry) => wanted.includes(entry.name));

const kafka = createKafka(config, `${config.KAFKA_CLIENT_ID}-consumer`, logger);
const store = new ObjectStore(createS3(config), config.S3_BUCKET);
await store.ensureBucket();
const admin = kafka.admin();
await admin.connect();
await ensureTopics(admin, allTopics(config.TOPIC_PREFIX, listed.map((e) => e.name)), config.TOPIC_PARTITIONS);
await admin.disconnect();
const publisher = new Publisher(kafka, config.TOPIC_PREFIX);
await publisher.connect();
const records = new RecordStore(store);
const registry = createRegistry('consumer');
const depthAdmin = kafka.admin();
await depthAdmin.connect();
const depth = new QueueDepth(depthAdmin, config.TOPIC_PREFIX, models.map((m) => m.name));
const metrics = consumerMetrics(registry, () => depth.get());
const metricsServer = await serveMetrics(registry, config.API_HOST, config.CONSUMER_METRICS_PORT);

const runnerArgs = [
  ...(config.RUNNER_MAX_BATCH ? ['--max-batch', String(config.RUNNER_MAX_BATCH)] : []),
  ...(config.RUNNER_BENCH_LOG ? ['--bench-log', resolve(config.RUNNER_BENCH_LOG)] : []),
];
const workers = models.map((model) => {
  const log = logger.child({ model: model.name });
  // One runner per listed GPU; without RUNNER_GPUS one runner sees every device.
  const gpus: (string | undefined)[] = config.RUNNER_GPUS.length ? config.RUNNER_GPUS : [undefined];
  const runners = gpus.map(
    (gpu) =>
      new Runner({
        model: model.name,
        source: model.source,
        python: resolve(config.RUNNER_PYTHON),
        cwd: resolve(config.RUNNER_DIR),
        device: config.RUNNER_DEVICE,
        stallMs: config.RUNNER_STALL_MS,
        startTimeoutMs: config.RUNNER_START_TIMEOUT_MS,
        logger: gpu === undefined ? log : log.child({ gpu }),
        extraArgs: runnerArgs,
        env: gpu === undefined ? {} : { CUDA_VISIBLE_DEVICES: gpu },
        onReady: (info) => metrics.runnerStarted?.(model.name, info.start_seconds),
        onRestart: () => metrics.runnerRestarted?.(model.name),
      }),
  );
  const runner = new RunnerPool(runners);
  return new ModelWorker({ kafka, publisher, config, store, records, runner, model, logger: log, metrics });
});
const cancels = new CancelListener(kafka, config.TOPIC_PREFIX, (id, model) => workers.find((w) => w.name === model)?.cancel(id));
await cancels.start();
await Promise.all(workers.map((worker) => worker.start()));
logger.info({ models: models.map((m) => m.name), metrics: `http://${config.API_HOST}:${config.CONSUMER_METRICS_PORT}/metrics` }, 'consumers running');

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'stopping: finishing in-flight jobs');
  await Promise.all(workers.map((worker) => worker.stop(config.SHUTDOWN_GRACE_MS)));
  await cancels.stop();
  await publisher.disconnect();
  await depthAdmin.disconnect();
  metricsServer.close();
  logger.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
