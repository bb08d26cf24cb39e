// Configuration is read once, from the environment, at each process' composition root.
// A bad value stops the process with a message that names the variable.
import { readFileSync } from 'node:fs';
import { z } from 'zod';

const originOf = (url: string) => {
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
};
const integer = (fallback: number, min = 0) => z.coerce.number().int().min(min).default(fallback);
const list = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((value) => value.split(',').map((item) => item.trim()).filter(Boolean));

/** Kafka: brokers and the names of this deployment's topics. */
const kafka = {
  KAFKA_BROKERS: list('127.0.0.1:9092').pipe(z.array(z.string().regex(/^[^:\s]+:\d+$/, 'expected host:port')).min(1)),
  KAFKA_CLIENT_ID: z.string().min(1).default('img2img'),
  /** Prefix of every topic name; tests use their own so they cannot see each other. */
  TOPIC_PREFIX: z.string().regex(/^[a-zA-Z0-9._-]{1,100}$/).default('img2img'),
  TOPIC_PARTITIONS: integer(3, 1),
};

/** Object storage. */
const storage = {
  S3_ENDPOINT: z.url().default('http://127.0.0.1:9000'),
  S3_REGION: z.string().min(1).default('us-east-1'),
  S3_ACCESS_KEY: z.string().min(1).default('minioadmin'),
  S3_SECRET_KEY: z.string().min(8).default('minioadmin'),
  S3_BUCKET: z
    .string()
    .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name: 3-63 of a-z 0-9 . -')
    .default('img2img'),
};

const shared = {
  ...kafka,
  ...storage,
  MODEL_NAMES_FILE: z.string().min(1).default('model_names.txt'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
};

/** API keys: the pepper their hashes are made with (the keys CLI and every API replica need the same). */
const pepper = z.string().min(16, 'at least 16 characters');
const keys = {
  AUTH_PEPPER: pepper.optional(),
  /** A file holding the pepper instead (a Docker secret or volume); its surrounding white space is ignored. */
  AUTH_PEPPER_FILE: z.string().min(1).optional(),
};

/** Webhooks: whether receivers may be on loopback or private networks (checked by the API at submission, by the dispatcher at connect time). */
const webhooks = {
  WEBHOOK_ALLOW_PRIVATE: z.enum(['0', '1'], { error: 'must be 0 or 1' }).default('0').transform((value) => value === '1'),
};

export const ApiConfigSchema = z.object({
  ...shared,
  ...keys,
  ...webhooks,
  /** on: every job route needs an API key; off: none does. Unset: on unless the API listens on loopback only. */
  AUTH: z.enum(['on', 'off']).optional(),
  /** Failed key checks a client address may make a minute; past it, keys this replica does not know get 429 (no storage read). */
  AUTH_FAILURES_PER_MINUTE: integer(60, 1),
  /** Who may read /metrics: anyone, or an admin key only. */
  METRICS_ACCESS: z.enum(['open', 'admin']).default('open'),
  /** The shared store of rate and concurrency counters, for every API replica. */
  REDIS_URL: z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL').default('redis://127.0.0.1:6379'),
  /** When Redis is down: `open` keeps accepting within per-process limits, `closed` answers 503. */
  LIMITS_WHEN_REDIS_DOWN: z.enum(['open', 'closed']).default('open'),
  /** A Redis command not answered in this time fails (a frozen Redis keeps its connections open). */
  REDIS_COMMAND_TIMEOUT_MS: integer(500, 10),
  /** Queue depth of a model past which it refuses low and normal priority (429); high until twice this. 0: no ceiling. */
  MODEL_QUEUE_CEILING: integer(10_000),
  /** Inputs, outputs and records of a job expire this many days after it was created (tenants may override). */
  RETENTION_DAYS: z.coerce.number().positive().default(7),
  API_HOST: z.string().min(1).default('127.0.0.1'),
  API_PORT: integer(8000),
  /** Base of the links the API hands out. Unset: an allowed Host of the request, else the address it came in on. */
  PUBLIC_BASE_URL: z.url().optional(),
  /** Host header values (host or host:port) that links may name when PUBLIC_BASE_URL is unset; any other Host is ignored. */
  ALLOWED_HOSTS: list('').pipe(
    z.array(z.string().regex(/^(?:[a-z0-9.-]+|\[[0-9a-f:.]+\])(?::\d{1,5})?$/i, 'host or host:port, e.g. img2img.example.com:8000')),
  ),
  /** Origins whose browser pages may call the API (CORS); `*` for any. Empty: CORS is off. */
  CORS_ORIGINS: list('').pipe(
    z.array(z.string().refine((value) => value === '*' || originOf(value) === value, 'an origin such as https://app.example.com, or *')),
  ),
  /** How long a client may take to send its request headers, and its whole request (a 20 MiB upload included). */
  HTTP_HEADERS_TIMEOUT_MS: integer(10_000, 1000),
  HTTP_REQUEST_TIMEOUT_MS: integer(120_000, 1000),
  /** How long an idle kept-alive connection stays open: longer than a proxy's 60 s for idle upstream connections. */
  HTTP_KEEP_ALIVE_TIMEOUT_MS: integer(65_000, 1000),
  MAX_BODY_BYTES: integer(20 * 1024 * 1024, 1),
  /** Bytes the uploads in progress may hold at once (buffers grow as bytes arrive); past it, 503 uploads_busy. */
  UPLOAD_MEMORY_BYTES: integer(512 * 1024 * 1024, 1024 * 1024),
  MAX_IMAGE_SIDE: integer(4096, 8),
  MAX_IMAGE_PIXELS: integer(16 * 1024 * 1024, 64),
  /** How long a request may wait for Kafka or object storage before it answers 503. */
  DEPENDENCY_TIMEOUT_MS: integer(4000, 100),
  /** Images the API decodes and re-encodes at once; more requests wait their turn (bounds memory). */
  IMAGE_CONCURRENCY: integer(2, 1),
  /** Interval of the comment lines that keep idle Server-Sent Event streams open through proxies. */
  SSE_HEARTBEAT_MS: integer(15_000, 100),
  /** Events buffered for one slow SSE client before the API drops it (it reconnects with Last-Event-ID). */
  SSE_CLIENT_BUFFER: integer(256, 1),
  /** How often the API sweeps storage: inputs no record owns (a crash mid-intake) and jobs past their retention; 0: never. */
  SWEEP_INTERVAL_MS: integer(120_000),
  /** An input without a record is left alone this long: its intake may still be running. */
  ORPHAN_GRACE_MS: integer(300_000, 1000),
});

export const ConsumerConfigSchema = z.object({
  ...shared,
  RUNNER_PYTHON: z.string().min(1).default('diffusion-py/.venv/bin/python'),
  RUNNER_DIR: z.string().min(1).default('diffusion-py'),
  /** A runner that sends no frame for this long while it has work is killed and restarted (up to 512x512; larger jobs scale it). */
  RUNNER_STALL_MS: integer(120_000, 1000),
  RUNNER_DEVICE: z.enum(['auto', 'cpu', 'cuda']).default('auto'),
  /** GPUs to use, e.g. "0,1": one runner per GPU and model (CUDA_VISIBLE_DEVICES). Empty: one runner. */
  RUNNER_GPUS: list('').pipe(z.array(z.string().regex(/^\d+$/, 'GPU indices such as 0,1'))),
  /** Largest batch the runner may form (0: the runner picks from its device). */
  RUNNER_MAX_BATCH: integer(0),
  /** Appends `model;time_seconds;memory_mib` per job to this CSV (a benchmark log, one line a job); empty: off. */
  RUNNER_BENCH_LOG: z.string().optional(),
  RUNNER_START_TIMEOUT_MS: integer(600_000, 1000),
  MAX_ATTEMPTS: integer(3, 1),
  /** A dead consumer's partitions move to a live one after this long. */
  KAFKA_SESSION_TIMEOUT_MS: integer(6000, 6000),
  /** On SIGTERM, how long in-flight jobs may take before their offsets are left for redelivery. */
  SHUTDOWN_GRACE_MS: integer(60_000, 0),
  /** A model's runner stops after this long without work, freeing GPU memory (0: never). */
  IDLE_UNLOAD_MS: integer(600_000),
  /** on: after an idle unload a standby runner waits with its imports done (no model, no GPU memory), so the next start skips them. */
  RUNNER_STANDBY: z.enum(['on', 'off']).default('on'),
  /** Address of the consumer's metrics server (GET /metrics). */
  CONSUMER_METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  CONSUMER_METRICS_PORT: integer(9464),
  /** off: only remote workers run this consumer's jobs (no runner process is spawned here). */
  RUNNER_LOCAL: z.enum(['on', 'off']).default('on'),
  /** on: remote GPU workers connect to ws://WORKER_GATEWAY_HOST:WORKER_GATEWAY_PORT/api/workers/connect. */
  WORKER_GATEWAY: z.enum(['on', 'off']).default('off'),
  WORKER_GATEWAY_HOST: z.string().min(1).default('127.0.0.1'),
  WORKER_GATEWAY_PORT: integer(8091),
  /** A remote job with no frame from its worker for this long is lost (run elsewhere) and the worker dropped. */
  WORKER_LEASE_MS: integer(60_000, 100),
  /** Strikes (results outvoted by other workers) after which a worker is evicted and its token refused. */
  WORKER_MAX_STRIKES: integer(3, 1),
  /** Two outputs of a verified job agree at this PSNR (dB) or above. */
  VERIFY_PSNR_DB: z.coerce.number().min(0).default(40),
  /** on: a runner's torch.compile artifacts are shared through the object store (consumer/compilecache.ts). */
  COMPILE_CACHE: z.enum(['on', 'off']).default('on'),
  /** Local directory of the compile caches, one folder per model (and GPU). Unset: <OS temp dir>/img2img-compile-cache. */
  COMPILE_CACHE_DIR: z.string().optional(),
  /** Part of the cache's key in the object store, e.g. the GPU kind or the image tag; unset: none. */
  COMPILE_CACHE_TAG: z.string().optional(),
  /** How long the download beside a runner's start may take; then the runner compiles with what it has. */
  COMPILE_CACHE_TIMEOUT_MS: integer(60_000, 100),
});

/** The webhook dispatcher (dispatcher/main.ts). */
export const DispatcherConfigSchema = z.object({
  ...shared,
  ...webhooks,
  /** Links in webhook bodies name PUBLIC_BASE_URL, else http://127.0.0.1:<API_PORT>. */
  PUBLIC_BASE_URL: ApiConfigSchema.shape.PUBLIC_BASE_URL,
  API_PORT: ApiConfigSchema.shape.API_PORT,
  KAFKA_SESSION_TIMEOUT_MS: ConsumerConfigSchema.shape.KAFKA_SESSION_TIMEOUT_MS,
  /** Wait before the first retry of a failed delivery; each later retry waits 4 times longer (8 retries, about 30 h in all). */
  WEBHOOK_RETRY_BASE_MS: integer(5000, 1),
  /** Deliveries the dispatcher sends at once. */
  WEBHOOK_CONCURRENCY: integer(16, 1),
  /** Address of the dispatcher's metrics server (GET /metrics); port 0: any free port. */
  DISPATCHER_METRICS_HOST: z.string().min(1).default('127.0.0.1'),
  DISPATCHER_METRICS_PORT: integer(9465),
});

/** The object store's settings alone. */
export const StorageConfigSchema = z.object(storage);

/** The keys CLI: the object store and the pepper. */
export const KeysConfigSchema = z.object({ ...storage, ...keys, LOG_LEVEL: shared.LOG_LEVEL });

/** Every variable of every process (what .env.example documents). */
export const ConfigSchema = z.object({ ...ApiConfigSchema.shape, ...ConsumerConfigSchema.shape, ...DispatcherConfigSchema.shape });

export type KafkaConfig = z.infer<z.ZodObject<typeof kafka>>;
export type StorageConfig = z.infer<z.ZodObject<typeof storage>>;
export type ApiConfig = z.infer<typeof ApiConfigSchema>;
export type ConsumerConfig = z.infer<typeof ConsumerConfigSchema>;
export type KeysConfig = z.infer<typeof KeysConfigSchema>;
export type DispatcherConfig = z.infer<typeof DispatcherConfigSchema>;
export type Config = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Parses the variables `schema` names (every process' by default); others are ignored. */
export function loadConfig(env: Record<string, string | undefined>): Config;
export function loadConfig<S extends z.ZodObject>(env: Record<string, string | undefined>, schema: S): z.infer<S>;
export function loadConfig(env: Record<string, string | undefined>, schema: z.ZodObject = ConfigSchema): unknown {
  // An empty variable means "not set", as in most .env tooling.
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = schema.safeParse(present);
  if (parsed.success) return parsed.data;
  const lines = parsed.error.issues.map((issue) => `  ${issue.path.join('.')}: ${issue.message}`);
  throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
}

/**
 * The config with AUTH_PEPPER read from AUTH_PEPPER_FILE when that is set. A file that cannot be
 * read, a short pepper, or both variables set stop the process with a message naming the file's variable.
 */
export function readPepperFile<C extends { AUTH_PEPPER?: string | undefined; AUTH_PEPPER_FILE?: string | undefined }>(config: C): C {
  const path = config.AUTH_PEPPER_FILE;
  if (!path) return config;
  const fail = (message: string) => new ConfigError(`invalid configuration:\n  AUTH_PEPPER_FILE: ${message}`);
  if (config.AUTH_PEPPER) throw fail('set AUTH_PEPPER or AUTH_PEPPER_FILE, not both');
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw fail(`cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const parsed = pepper.safeParse(text);
  if (!parsed.success) throw fail(`${path} holds ${text.length} characters; the pepper needs at least 16`);
  return { ...config, AUTH_PEPPER: parsed.data };
}
