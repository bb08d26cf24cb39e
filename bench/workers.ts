// The same tiny runner local over stdio and remote over the WebSocket
// gateway, in the same run (throughput with every job sent at once, and latency one job at a
// time); then what verification costs: two remote workers with the policies off, spot:0.1 and
// all:2 (throughput, and the runs each policy did per job). All on 127.0.0.1; the gateway's
// token store is a stub that lets every token in (tokens are checked once per connection).
//   npm run bench:workers -- [--jobs 16] [--size 512] [--light 8] [--rounds 2] [--verify-jobs 20] [--only transport|verification]
import { spawn, type ChildProcess } from 'node:child_process';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { loadConfig } from '../common/config.js';
import { createLogger } from '../common/logger.js';
import type { VerifyPolicy } from '../common/models.js';
import type { WorkerStore, WorkerToken } from '../common/workers.js';
import { Gateway } from '../consumer/remote/gateway.js';
import { RunnerPool } from '../consumer/pool.js';
import type { RunnerOutcome } from '../consumer/run.js';
import { Runner } from '../consumer/runner.js';
import { Verifier, type WorkerLedger } from '../consumer/remote/verify.js';

const { values: flags } = parseArgs({
  options: {
    jobs: { type: 'string', default: '16' },
    size: { type: 'string', default: '512' },
    light: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '2' },
    'verify-jobs': { type: 'string', default: '20' },
    steps: { type: 'string', default: '10' },
    /** transport, verification, or both (default). */
    only: { type: 'string' },
  },
});
const JOBS = Number(flags.jobs);
const SIZE = Number(flags.size);
const PARAMS = { prompt: 'a benchmark', negative_prompt: null, strength: 0.6, steps: Number(flags.steps), guidance_scale: 7.5, seed: 1 };
const config = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
const logger = createLogger('bench', 'silent');
const python = resolve(config.RUNNER_PYTHON);

const noise = (size: number) =>
  sharp(Buffer.from(Array.from({ length: size * size * 3 }, (_, i) => (i * 7919) % 256)), { raw: { width: size, height: size, channels: 3 } })
    .png()
    .toBuffer();

/** Lets any token in: each worker is named by its token. */
function stubWorkers(): WorkerStore {
  const token = (id: string): WorkerToken => ({ v: 1, id, name: id, hash: '', created_at: '', revoked_at: null, strikes: [], evicted: null });
  return {
    verify: async (bearer: string) => token(bearer),
    stillAllowed: async () => true,
    strike: async () => undefined,
    writeStatus: async () => {},
  } as unknown as WorkerStore;
}

/** A gateway for the tiny model, with `count` remote workers connected to it. */
async function remotePool(count: number): Promise<{ pool: RunnerPool; gateway: Gateway; children: ChildProcess[] }> {
  const pool = new RunnerPool([]);
  const gateway = new Gateway({ host: '127.0.0.1', port: 0, workers: stubWorkers(), pools: new Map([['tiny', pool]]), leaseMs: 600_000, maxStrikes: 1000, logger });
  await gateway.start();
  const joined = new Promise<void>((done) => pool.onChange(() => pool.workers.size >= count && done()));
  const children = Array.from({ length: count }, (_, i) =>
    spawn(python, ['-m', 'img2img_runner', '--model', 'tiny', '--device', 'cpu', '--connect', gateway.url(), '--token', `worker${i}`], {
      cwd: resolve(config.RUNNER_DIR), stdio: 'ignore', env: { ...process.env, HF_HUB_OFFLINE: '1' },
    }),
  );
  await joined;
  return { pool, gateway, children };
}

async function localPool(): Promise<{ pool: RunnerPool; stop(): Promise<void> }> {
  const runner = new Runner({
    model: 'tiny', python, cwd: resolve(config.RUNNER_DIR), device: 'cpu', stallMs: 600_000, startTimeoutMs: 600_000, logger,
  });
  await runner.ensureStarted();
  return { pool: new RunnerPool([runner]), stop: () => runner.stop(10_000) };
}

const check = (outcomes: RunnerOutcome[]) => {
  if (outcomes.some((o) => !o.ok)) throw new Error(`a job failed: ${JSON.stringify(outcomes.find((o) => !o.ok))}`);
};

/** Every job at once: jobs per second. */
async function throughput(run: (i: number) => Promise<RunnerOutcome>, jobs: number): Promise<number> {
  const started = performance.now();
  check(await Promise.all(Array.from({ length: jobs }, (_, i) => run(i))));
  return jobs / ((performance.now() - started) / 1000);
}

/** One job at a time: milliseconds each. */
async function latencies(run: (i: number) => Promise<RunnerOutcome>, jobs: number): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < jobs; i++) {
    const started = performance.now();
    check([await run(i)]);
    times.push(performance.now() - started);
  }
  return times;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const fixed = (value: number, digits = 2) => value.toFixed(digits);

async function transport(image: Buffer): Promise<void> {
  const local = await localPool();
  const remote = await remotePool(1);
  const modes = { 'local (stdio)': local.pool, 'remote (WebSocket)': remote.pool };
  const rates: Record<string, number[]> = {};
  const times: Record<string, number[]> = {};
  let seq = 0;
  for (const pool of Object.values(modes)) await pool.run({ id: `warm-${seq++}`, params: PARAMS, image: image }); // first call pays for lazy imports
  // The two take turns (job by job for latency, round by round, first one then the other, for
  // throughput), so a noisy neighbour on the machine hits both alike.
  const ratios: number[] = [];
  for (let round = 0; round < Number(flags.rounds); round++) {
    const order = round % 2 ? Object.entries(modes).reverse() : Object.entries(modes);
    for (const [name, pool] of order) (rates[name] ??= []).push(await throughput((i) => pool.run({ id: `t${seq++}`, params: { ...PARAMS, seed: i }, image: image }), JOBS));
    ratios.push(rates['remote (WebSocket)']!.at(-1)! / rates['local (stdio)']!.at(-1)!);
    for (let i = 0; i < Number(flags.light); i++) {
      for (const [name, pool] of order) (times[name] ??= []).push(...(await latencies(() => pool.run({ id: `l${seq++}`, params: { ...PARAMS, seed: i }, image: image }), 1)));
    }
  }
  console.log(`\n${SIZE}x${SIZE}, ${JOBS} jobs at once x ${flags.rounds} rounds; ${flags.light} one at a time x ${flags.rounds} rounds; steps ${PARAMS.steps}, strength ${PARAMS.strength}, CPU`);
  console.log('| runner | img/s (median of rounds) | latency p50 ms (one job at a time) |');
  console.log('| --- | ---: | ---: |');
  for (const name of Object.keys(modes)) console.log(`| ${name} | ${fixed(median(rates[name]!))} | ${fixed(median(times[name]!), 0)} |`);
  const [l, r] = Object.keys(modes);
  const extra = times[r!]!.map((t, i) => t - times[l!]![i]!);
  console.log(`remote/local throughput: median of rounds ${fixed(median(ratios))} (rounds: ${ratios.map((x) => fixed(x)).join(', ')}); extra latency per job: median ${fixed(median(extra), 0)} ms over ${extra.length} pairs`);
  await local.stop();
  await remote.gateway.stop();
  for (const child of remote.children) child.kill('SIGKILL');
}

async function verification(image: Buffer): Promise<void> {
  const { pool, gateway, children } = await remotePool(2);
  const runs = { count: 0 };
  const ledger: WorkerLedger = { accepted: () => {}, strike: async () => {}, evicted: () => false };
  const policies: [string, VerifyPolicy][] = [['off', { kind: 'off' }], ['spot:0.1', { kind: 'spot', fraction: 0.1 }], ['all:2', { kind: 'all' }]];
  const jobs = Number(flags['verify-jobs']);
  const originalRunOn = pool.runOn.bind(pool);
  pool.runOn = (...args) => {
    runs.count++;
    return originalRunOn(...args);
  };
  let seq = 0;
  // Warm both workers: a first call pays for lazy imports.
  const first = await pool.pick();
  await pool.runOn(first, { id: 'warm-a', params: PARAMS, image: image });
  await pool.runOn(await pool.pick({ exclude: new Set([first.worker!]) }), { id: 'warm-b', params: PARAMS, image: image });
  const rates: Record<string, number[]> = {};
  const runsPerJob: Record<string, number[]> = {};
  for (let round = 0; round < Number(flags.rounds); round++) {
    // Each round in another order, so no policy always runs first.
    for (const [name, policy] of policies.map((_, i) => policies[(i + round) % policies.length]!)) {
      const verifier = new Verifier(pool, policy, ledger, config.VERIFY_PSNR_DB, logger);
      runs.count = 0;
      (rates[name] ??= []).push(await throughput((i) => verifier.run({ id: `v${seq++}`, params: { ...PARAMS, seed: i }, image: image }), jobs));
      (runsPerJob[name] ??= []).push(runs.count / jobs);
    }
  }
  const results = policies.map(([name]) => ({ name, rate: median(rates[name]!), runsPerJob: runsPerJob[name]!.reduce((a, b) => a + b) / runsPerJob[name]!.length }));
  console.log(`\nverification: 2 remote workers, ${jobs} jobs at once x ${flags.rounds} rounds, ${SIZE}x${SIZE} (img/s: median of rounds)`);
  console.log('| policy | img/s | runs per job | throughput vs off |');
  console.log('| --- | ---: | ---: | ---: |');
  for (const r of results) console.log(`| ${r.name} | ${fixed(r.rate)} | ${fixed(r.runsPerJob)} | ${fixed(r.rate / results[0]!.rate)} |`);
  await gateway.stop();
  for (const child of children) child.kill('SIGKILL');
}

const image = await noise(SIZE);
if (flags.only !== 'verification') await transport(image);
if (flags.only !== 'transport') await verification(image);
process.exit(0);
