// Test helpers for the consumer: a job enqueued the way the API does it, a consumer
// process to start and kill, and the events of a job read back from Kafka.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Kafka } from 'kafkajs';
import sharp from 'sharp';
import type { Config } from '../../common/config.js';
import { newJobId, type JobEvent, type JobMessage, type JobParams } from '../../common/jobs.js';
import { queued } from '../../common/lifecycle.js';
import type { RecordStore } from '../../common/records.js';
import { jobKeys, type ObjectStore } from '../../common/storage.js';
import { ensureTopics } from '../../common/kafka.js';
import { allTopics, eventsTopic, jobTopic, type Priority } from '../../common/topics.js';
import { createConsumer, type Consumer } from '../../consumer/consumer.js';
import { createLogger } from '../../common/logger.js';
import { parseModelNames } from '../../common/models.js';
import { uniqueName } from './env.js';
import { answers, childPids, freePort } from './processes.js';

export async function pngOf(width: number, height: number, seed = 1): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = (i * 31 + seed * 97) % 251;
  return sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** The bucket and the `tiny` model's topics of this test's prefix. */
export async function prepareServers(kafka: Kafka, config: Config, store: ObjectStore): Promise<void> {
  await store.ensureBucket();
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(admin, allTopics(config.TOPIC_PREFIX, ['tiny']), 2);
  await admin.disconnect();
}

export interface EnqueueOptions {
  model?: string;
  priority?: Priority;
  params?: Partial<JobParams>;
  size?: number;
  /** Leave the input object out, as if it had been lost. */
  withoutInput?: boolean;
}

/**
 * Stores the input, produces the message (carrying the record, as the API's does) and writes
 * the record with the message's place in Kafka, in the API's order.
 */
export async function enqueue(
  kafka: Kafka,
  config: Config,
  store: ObjectStore,
  records: RecordStore,
  options: EnqueueOptions = {},
): Promise<string> {
  const id = newJobId();
  const model = options.model ?? 'tiny';
  const priority = options.priority ?? 'normal';
  const size = options.size ?? 64;
  if (!options.withoutInput) await store.put(jobKeys(id).input, await pngOf(size, size), 'image/png');
  const { record } = queued({
    id, model_name: model, priority, width: size, height: size, input_key: jobKeys(id).input, idempotency: null,
    params: { prompt: 'a test', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 42, ...options.params },
  });
  const message: JobMessage = { v: 1, id, model_name: model, priority, created_at: record.created_at, record };
  const topic = jobTopic(config.TOPIC_PREFIX, model, priority);
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const [placed] = await producer.send({ topic, acks: -1, messages: [{ key: id, value: JSON.stringify(message) }] });
  await producer.disconnect();
  await records.create({ ...record, queue: { topic, partition: placed!.partition, offset: placed!.baseOffset! } });
  return id;
}

export async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs = 60_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export const waitForStatus = (records: RecordStore, id: string, statuses: string[], timeoutMs = 60_000) =>
  waitFor(async () => {
    const record = await records.get(id);
    return record && statuses.includes(record.status) ? record : undefined;
  }, timeoutMs, `job ${id} to reach ${statuses.join('|')}`);

/** A consumer in this process (createConsumer, as consumer/main.ts runs it); stop() ends it. */
export async function startTestConsumer(config: Config, models = 'tiny\n'): Promise<Consumer> {
  const listed = parseModelNames(models);
  const consumer = createConsumer({ ...config, CONSUMER_METRICS_PORT: 0 }, { models: listed, listed, logger: createLogger('consumer-test', config.LOG_LEVEL) });
  await consumer.start();
  return consumer;
}

/** A consumer process with its own model list (for tests that kill it); stdout/stderr kept for failures. */
export class ConsumerProcess {
  child: ChildProcess | undefined;
  log = '';

  constructor(
    private readonly env: Record<string, string>,
    private readonly models = 'tiny\n',
  ) {}

  /** Where the consumer serves its metrics once its consumers run: its readiness signal. */
  metricsUrl = '';

  async start(): Promise<this> {
    const port = Number(this.env.CONSUMER_METRICS_PORT) || (await freePort());
    this.metricsUrl = `http://127.0.0.1:${port}/metrics`;
    const dir = mkdtempSync(join(tmpdir(), 'consumer-'));
    const modelsFile = join(dir, 'model_names.txt');
    writeFileSync(modelsFile, this.models);
    // node --import tsx, not the tsx wrapper: the pid must be the consumer's own, so that
    // SIGKILL kills the consumer and not a wrapper that leaves it running.
    this.child = spawn(process.execPath, ['--import', 'tsx', 'consumer/main.ts'], {
      env: { ...process.env, MODEL_NAMES_FILE: modelsFile, LOG_LEVEL: 'info', ...this.env, CONSUMER_METRICS_HOST: '127.0.0.1', CONSUMER_METRICS_PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.on('data', (chunk) => (this.log += chunk));
    this.child.stderr!.on('data', (chunk) => (this.log += chunk));
    return this;
  }

  async ready(timeoutMs = 60_000): Promise<void> {
    await waitFor(async () => ((await answers(this.metricsUrl)) ? true : undefined), timeoutMs, 'the consumer to serve its metrics');
  }

  /** The pid of this consumer's newest runner (python) child. */
  runnerPid(): number | undefined {
    return this.child?.pid === undefined ? undefined : childPids(this.child.pid, 'img2img_runner').at(-1);
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill(signal);
    return exited;
  }
}

/** Reads every event of the given jobs from the events topic, from the beginning. */
export async function readEvents(kafka: Kafka, config: Config, ids: string[], until: (events: JobEvent[]) => boolean, timeoutMs = 30_000): Promise<JobEvent[]> {
  const consumer = kafka.consumer({ groupId: uniqueName('events-reader') });
  const seen: JobEvent[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic: eventsTopic(config.TOPIC_PREFIX), fromBeginning: true });
  let done!: () => void;
  const finished = new Promise<void>((resolve) => (done = resolve));
  await consumer.run({
    eachMessage: async ({ message }) => {
      const event = JSON.parse(String(message.value)) as JobEvent;
      if (ids.includes(event.id)) seen.push(event);
      if (until(seen)) done();
    },
  });
  const timer = setTimeout(done, timeoutMs);
  await finished;
  clearTimeout(timer);
  await consumer.disconnect();
  return seen;
}
