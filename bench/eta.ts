// How good a queued job's estimated_start_at is: the API and a consumer with a stand-in runner
// (it sleeps a per-batch latency table), a warm-up burst that gives the consumer its measured
// rate (after one job that waits for the runner to start), then a burst of N jobs whose views are read at submission and every second while they
// wait. Each estimate is compared with the job's actual start: error = |estimated - actual| /
// (actual - when estimated). The baseline, from the same views in the same run, is the naive
// estimate position x mean run time (one job at a time, no batching).
//   npm run bench:eta -- [--jobs 80] [--warmup 120] [--clients 8] [--source standin:<json>]
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pLimit from 'p-limit';
import sharp from 'sharp';
import { loadConfig } from '../common/config.js';
import { RecordStore } from '../common/records.js';
import { API_NODE_FLAGS } from '../common/nodeflags.js';
import { ObjectStore } from '../common/storage.js';
import { allTopics } from '../common/topics.js';
import { COUNT_REQUESTS, infraProcesses, Meter } from './cpu.js';
import { waitHttp } from './ready.js';
import { dropTopics } from './topics.js';

const { values: flags } = parseArgs({
  options: {
    jobs: { type: 'string', default: '80' },
    warmup: { type: 'string', default: '120' },
    clients: { type: 'string', default: '8' },
    /** 64x64 at 10 steps and strength 0.6 (6 denoising steps): batches of up to 4, 0.5 s for one, 1.2 s for four. */
    source: { type: 'string', default: 'standin:{"per_batch_ms":{"1":500,"4":1200},"width":64,"height":64,"denoise_steps":6}' },
  },
});
const JOBS = Number(flags.jobs);
const WARMUP = Number(flags.warmup);
const prefix = `bench-eta-${Date.now().toString(36)}`;
const config = loadConfig({ ...process.env, TOPIC_PREFIX: prefix, LOG_LEVEL: 'silent' });

interface View {
  id: string;
  status: string;
  queue_position: number | null;
  estimated_start_at: string | null;
  estimated_finish_at: string | null;
}

/** One estimate of one job: when it was made, and what it said. */
interface Estimate {
  id: string;
  at: number;
  position: number;
  start: number;
  naive: number;
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
};

function startProcess(script: string, env: Record<string, string>): ChildProcess {
  // kafkajs#1751 sets a negative timer delay, which Node reports and clamps to 1 ms (as scripts/start does).
  const nodeFlags = script === 'api/main.ts' ? API_NODE_FLAGS : [];
  return spawn(process.execPath, ['--disable-warning=TimeoutNegativeWarning', ...nodeFlags, '--import', 'tsx', ...COUNT_REQUESTS, script], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
}

async function submit(api: string, image: Buffer, seed: number): Promise<string> {
  const form = new FormData();
  form.append('image', new Blob([new Uint8Array(image)], { type: 'image/png' }), 'in.png');
  for (const [key, value] of Object.entries({ strength: 0.6, steps: 10, seed })) form.append(key, String(value));
  const response = await fetch(`${api}/api/diffusion?model_name=tiny&prompt=a+benchmark&priority=normal`, { method: 'POST', body: form });
  if (response.status !== 202) throw new Error(`submit: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { id: string }).id;
}

/** The job's view, as an estimate when it has one. */
async function estimate(api: string, id: string): Promise<Estimate | undefined> {
  const view = (await (await fetch(`${api}/api/jobs/${id}`)).json()) as View;
  const at = Date.now();
  if (view.status !== 'queued' || view.queue_position === null || !view.estimated_start_at || !view.estimated_finish_at) return undefined;
  const start = Date.parse(view.estimated_start_at);
  const meanRun = Date.parse(view.estimated_finish_at) - start;
  return { id, at, position: view.queue_position, start, naive: at + view.queue_position * meanRun };
}

async function drained(records: RecordStore, ids: string[]): Promise<Map<string, number>> {
  for (;;) {
    const all = await Promise.all(ids.map((id) => records.get(id)));
    if (all.every((r) => r && r.status !== 'queued' && r.status !== 'running')) {
      return new Map(all.map((r) => [r!.id, Date.parse(r!.started_at ?? r!.finished_at!)]));
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Submits `count` jobs from the clients; with `watch`, reads each one's estimate at once and every second while it waits. */
async function burst(api: string, image: Buffer, count: number, watch: boolean): Promise<{ ids: string[]; first: Estimate[]; later: Estimate[] }> {
  const limit = pLimit(Number(flags.clients));
  const first: Estimate[] = [];
  const later: Estimate[] = [];
  const ids = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      limit(async () => {
        const id = await submit(api, image, i);
        if (watch) {
          const seen = await estimate(api, id);
          if (seen) first.push(seen);
        }
        return id;
      }),
    ),
  );
  if (watch) {
    for (let waiting = [...ids]; waiting.length; ) {
      await new Promise((r) => setTimeout(r, 1000));
      const seen = await Promise.all(waiting.map((id) => estimate(api, id)));
      later.push(...seen.filter((e): e is Estimate => e !== undefined));
      waiting = waiting.filter((_, i) => seen[i] !== undefined);
    }
  }
  return { ids, first, later };
}

function errors(estimates: Estimate[], starts: Map<string, number>, pick: (e: Estimate) => number): number[] {
  return estimates
    .map((e) => ({ e, actual: starts.get(e.id)! }))
    .filter(({ e, actual }) => actual - e.at >= 500) // a wait under half a second: any estimate's relative error is noise
    .map(({ e, actual }) => Math.abs(pick(e) - actual) / (actual - e.at));
}

async function main(): Promise<void> {
  const port = 19_000 + Math.floor(Math.random() * 1000);
  const api = `http://127.0.0.1:${port}`;
  const dir = mkdtempSync(join(tmpdir(), 'bench-eta-'));
  writeFileSync(join(dir, 'model_names.txt'), `tiny ${flags.source}\n`);
  const env = { TOPIC_PREFIX: prefix, API_PORT: String(port), MODEL_NAMES_FILE: join(dir, 'model_names.txt'), LOG_LEVEL: 'warn', CONSUMER_METRICS_PORT: '0', IDLE_UNLOAD_MS: '0' };
  const records = new RecordStore(new ObjectStore(config));
  const image = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 40, g: 120, b: 200 } } }).png().toBuffer();
  const processes = [startProcess('api/main.ts', env), startProcess('consumer/main.ts', env)];
  const meter = new Meter(
    [{ name: 'API', pid: processes[0]!.pid!, child: processes[0] }, { name: 'consumer', pid: processes[1]!.pid!, child: processes[1], descendants: 'runner' }, ...infraProcesses()],
    config,
  );
  try {
    await waitHttp(`${api}/readyz`);
    await drained(records, [await submit(api, image, 0)]); // the runner is up: its start is no part of the pace
    const warm = await burst(api, image, WARMUP, false);
    await drained(records, warm.ids);
    await new Promise((r) => setTimeout(r, 3000)); // the consumer's stats record catches up
    const began = performance.now();
    await meter.begin();
    const measured = await burst(api, image, JOBS, true);
    const starts = await drained(records, measured.ids);
    await meter.end();
    const seconds = (performance.now() - began) / 1000;

    const rows = [
      ['at submission', measured.first],
      ['while waiting (every 1 s)', measured.later],
    ] as const;
    console.log(`\nrunner: ${flags.source}; warm-up ${WARMUP} jobs, then ${JOBS} jobs from ${flags.clients} clients, drained in ${seconds.toFixed(1)} s`);
    console.table(
      rows.flatMap(([when, estimates]) => {
        const rate = errors(estimates, starts, (e) => e.start);
        const naive = errors(estimates, starts, (e) => e.naive);
        return [
          { estimates: when, method: 'position / measured rate', n: rate.length, 'error p50': percentile(rate, 50).toFixed(3), 'error p90': percentile(rate, 90).toFixed(3) },
          { estimates: when, method: 'baseline: position x mean run', n: naive.length, 'error p50': percentile(naive, 50).toFixed(3), 'error p90': percentile(naive, 90).toFixed(3) },
        ];
      }),
    );
    console.log(`\nThe measured burst, its reads of each job's view included:\n${meter.report(JOBS).join('\n')}`);
  } finally {
    for (const child of processes) child.kill('SIGTERM');
    await dropTopics(config, allTopics(prefix, ['tiny'])).catch((error: unknown) => console.error(`could not delete the ${prefix}.* topics:`, error));
  }
}

await main();
process.exit(0);
