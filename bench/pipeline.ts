// (a) the runner alone, fed over its frame protocol as fast as it
// takes jobs, then (b) the whole system (API, Kafka, MinIO, consumer, runner) at
// saturation with the same settings, in the same run; then the pipeline's overhead at
// light load (end-to-end latency minus the runner's compute time).
//   npm run bench:pipeline -- [--jobs 40] [--sizes 64,512] [--light 20]
// With the H100 stand-in runner (it sleeps the measured per-batch latencies):
//   npm run bench:pipeline -- --source standin:$PWD/bench/gpu/h100-sd15.json --sizes 512 --steps 30 --strength 0.5 \
//     --jobs 240 --clients 96 --light 0
// --cpu-prof DIR: where the API's and the consumer's CPU time goes (python3 bench/cpuprofile.py DIR/*.cpuprofile).
// Each size's saturation run also prints the CPU milliseconds and the S3 and Kafka requests per job of
// the API, the consumer (and its runner), the webhook dispatcher, this process, MinIO and Kafka (bench/cpu.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import pLimit from 'p-limit';
import sharp from 'sharp';
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/logger.js';
import { API_NODE_FLAGS } from '../common/nodeflags.js';
import { RecordStore } from '../common/records.js';
import { ObjectStore } from '../common/storage.js';
import { allTopics, webhookRetryTopics } from '../common/topics.js';
import { Runner } from '../consumer/runner.js';
import { dropBucket } from './bucket.js';
import { COUNT_REQUESTS, infraProcesses, Meter, type Watched } from './cpu.js';
import { waitHttp } from './ready.js';
import { dropTopics } from './topics.js';

const { values: flags } = parseArgs({
  options: {
    jobs: { type: 'string', default: '40' },
    sizes: { type: 'string', default: '64,512' },
    light: { type: 'string', default: '20' },
    steps: { type: 'string', default: '10' },
    strength: { type: 'string', default: '0.6' },
    /** A model_names.txt source for the `tiny` model's line, e.g. standin:<json>. */
    source: { type: 'string' },
    /** Clients at saturation, each submitting a job and waiting for it: at least twice the runner's batch. */
    clients: { type: 'string', default: '16' },
    /** A directory for V8 CPU profiles of the API and the consumer, written as they exit (bench/cpuprofile.py sums them). */
    'cpu-prof': { type: 'string' },
  },
});
const JOBS = Number(flags.jobs);
const LIGHT = Number(flags.light);
const PARAMS = { prompt: 'a benchmark', negative_prompt: null, strength: Number(flags.strength), steps: Number(flags.steps), guidance_scale: 7.5, seed: 1 };
const prefix = `bench-${Date.now().toString(36)}`;
const config = loadConfig({ ...process.env, TOPIC_PREFIX: prefix, S3_BUCKET: prefix, LOG_LEVEL: 'silent' });
const logger = createLogger('bench', 'silent');

const noise = (size: number) =>
  sharp(Buffer.from(Array.from({ length: size * size * 3 }, (_, i) => (i * 7919) % 256)), { raw: { width: size, height: size, channels: 3 } })
    .png()
    .toBuffer();

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};

/** (a) The runner alone: every job sent at once, so the runner batches as it likes. */
async function runnerAlone(size: number): Promise<number> {
  const runner = new Runner({
    model: 'tiny', source: flags.source, python: resolve(config.RUNNER_PYTHON), cwd: resolve(config.RUNNER_DIR), device: 'auto',
    stallMs: 600_000, startTimeoutMs: 600_000, logger,
  });
  await runner.ensureStarted();
  const image = await noise(size);
  await runner.run({ id: 'warm', params: PARAMS, image: image });
  const started = performance.now();
  const outcomes = await Promise.all(Array.from({ length: JOBS }, (_, i) => runner.run({ id: `job-${i}`, params: { ...PARAMS, seed: i }, image: image })));
  const seconds = (performance.now() - started) / 1000;
  await runner.stop(10_000);
  if (outcomes.some((o) => !o.ok)) throw new Error('runner failed a job');
  return JOBS / seconds;
}

function startProcess(script: string, env: Record<string, string>): ChildProcess {
  // kafkajs#1751 sets a negative timer delay, which Node reports and clamps to 1 ms (as scripts/start does).
  const profile = flags['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${resolve(flags['cpu-prof'])}`, `--cpu-prof-name=${script.split('/')[0]}.${Date.now()}.cpuprofile`] : [];
  const nodeFlags = script === 'api/main.ts' ? API_NODE_FLAGS : [];
  const child = spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', ...nodeFlags, ...profile, '--import', 'tsx', ...COUNT_REQUESTS, script], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  return child;
}

async function submit(api: string, image: Buffer, seed: number): Promise<string> {
  const form = new FormData();
  form.append('image', new Blob([new Uint8Array(image)], { type: 'image/png' }), 'in.png');
  for (const [key, value] of Object.entries({ strength: PARAMS.strength, steps: PARAMS.steps, guidance_scale: PARAMS.guidance_scale, seed })) {
    form.append(key, String(value));
  }
  const response = await fetch(`${api}/api/diffusion?model_name=tiny&prompt=a+benchmark&priority=normal`, { method: 'POST', body: form });
  if (response.status !== 202) throw new Error(`submit: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { id: string }).id;
}

/** Waits for the job's terminal SSE event; answers when it was seen. */
async function finished(api: string, id: string): Promise<number> {
  const response = await fetch(`${api}/api/jobs/${id}/events`);
  const decoder = new TextDecoder();
  let text = '';
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    text += decoder.decode(chunk, { stream: true });
    if (/event: (succeeded|failed|canceled)/.test(text)) break;
  }
  const at = performance.now();
  if (!/event: succeeded/.test(text)) throw new Error(`job ${id} did not succeed: ${text.split('\n').filter((l) => l.startsWith('data:')).at(-1)}`);
  return at;
}

async function main(): Promise<void> {
  const sizes = flags.sizes.split(',').map(Number);
  const port = 18_000 + Math.floor(Math.random() * 1000);
  const api = `http://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'bench-'));
  writeFileSync(join(dir, 'model_names.txt'), `tiny ${flags.source ?? ''}\n`);
  const env = { TOPIC_PREFIX: prefix, S3_BUCKET: prefix, API_PORT: String(port), MODEL_NAMES_FILE: join(dir, 'model_names.txt'), LOG_LEVEL: 'warn', CONSUMER_METRICS_PORT: '0', DISPATCHER_METRICS_PORT: '0', IDLE_UNLOAD_MS: '0' };
  const rows: string[][] = [];
  const records = new RecordStore(new ObjectStore(config));

  const alone = new Map<number, number>();
  for (const size of sizes) alone.set(size, await runnerAlone(size));

  const [apiProcess, consumerProcess, dispatcherProcess] = ['api/main.ts', 'consumer/main.ts', 'dispatcher/main.ts'].map((script) => startProcess(script, env));
  const processes = [apiProcess!, consumerProcess!, dispatcherProcess!];
  const watched: Watched[] = [
    { name: 'API', pid: apiProcess!.pid!, child: apiProcess },
    { name: 'consumer', pid: consumerProcess!.pid!, child: consumerProcess, descendants: 'runner' },
    { name: 'dispatcher', pid: dispatcherProcess!.pid!, child: dispatcherProcess },
    { name: 'bench (clients)', pid: process.pid },
    ...infraProcesses(),
  ];
  const cpuReports: string[] = [];
  try {
    await waitHttp(`${api}/readyz`);
    for (const size of sizes) {
      const image = await noise(size);
      await finished(api, await submit(api, image, 0)); // the runner is loaded and warm
      const meter = new Meter(watched, config);
      await meter.begin();
      const started = performance.now();
      const limit = pLimit(Number(flags.clients));
      const ends = await Promise.all(Array.from({ length: JOBS }, (_, i) => limit(async () => finished(api, await submit(api, image, i)))));
      await meter.end();
      cpuReports.push(`\n${size}x${size}, ${JOBS} jobs at saturation:`, ...meter.report(JOBS));
      const system = JOBS / ((Math.max(...ends) - started) / 1000);
      const ratio = system / alone.get(size)!;
      rows.push([`${size}x${size}`, alone.get(size)!.toFixed(2), system.toFixed(2), ratio.toFixed(3)]);
    }

    const overhead: number[] = [];
    const parts: Record<string, number[]> = { 'accept→start': [], 'start→stored (minus compute)': [], 'stored→SSE seen': [], 'POST answered': [] };
    const image = await noise(64);
    for (let i = 0; i < LIGHT; i++) {
      const sent = performance.now();
      const id = await submit(api, image, i);
      const answered = performance.now();
      const done = await finished(api, id);
      const record = await records.get(id);
      const compute = (record?.timings?.compute_s ?? 0) * 1000;
      overhead.push(done - sent - compute);
      const t = record!.timings!;
      parts['POST answered']!.push(answered - sent);
      parts['accept→start']!.push(t.queue_s * 1000);
      parts['start→stored (minus compute)']!.push(t.run_s * 1000 - compute);
      parts['stored→SSE seen']!.push(done - sent - t.total_s * 1000);
    }

    console.log(`\nrunner: ${flags.source ?? 'tiny'}; jobs per size: ${JOBS} from ${flags.clients} clients, steps ${PARAMS.steps}, strength ${PARAMS.strength}; light load: ${LIGHT} sequential 64x64 jobs`);
    console.table(rows.map(([size, a, b, r]) => ({ size, 'runner alone img/s (a)': a, 'system img/s (b)': b, '(b)/(a)': r })));
    console.table([{ 'overhead p50 ms': percentile(overhead, 50).toFixed(1), 'overhead p99 ms': percentile(overhead, 99).toFixed(1) }]);
    console.table(Object.entries(parts).map(([part, values]) => ({ part, 'p50 ms': percentile(values, 50).toFixed(1), 'p99 ms': percentile(values, 99).toFixed(1) })));
    console.log(cpuReports.join('\n'));
  } finally {
    await Promise.all(processes.map((child) => new Promise((exited) => (child.exitCode !== null ? exited(null) : (child.once('exit', exited), child.kill('SIGTERM'))))));
    await dropBucket(config).catch((error: unknown) => console.error(`could not remove the bucket ${prefix}:`, error));
    await dropTopics(config, [...allTopics(prefix, ['tiny']), ...webhookRetryTopics(prefix)]).catch((error: unknown) => console.error(`could not delete the ${prefix}.* topics:`, error));
  }
}

await main();
process.exit(0);
