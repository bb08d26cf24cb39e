// Benchmark of POST /api/diffusion against its baseline, raw S3 PUTs of the same bytes from
// Node, at the same concurrency in the same run. The API runs as a child process so its
// peak RSS (VmHWM) can be read. Not a test: `npm run bench:api -- --duration 20 --concurrency 32`.
// Over the API's rounds it also prints the CPU milliseconds and the S3 and Kafka requests per accepted
// job of the API, this process, MinIO and Kafka (bench/cpu.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';
import { DeleteObjectsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { loadConfig } from '../common/config.js';
import { readModelNames } from '../common/models.js';
import { API_NODE_FLAGS } from '../common/nodeflags.js';
import { KeyStore } from '../common/keys.js';
import { createS3, ObjectStore } from '../common/storage.js';
import { allTopics } from '../common/topics.js';
import { dropBucket } from './bucket.js';
import { COUNT_REQUESTS, infraProcesses, Meter } from './cpu.js';
import { dropTopics } from './topics.js';

const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '20' },
    concurrency: { type: 'string', default: '32' },
    size: { type: 'string', default: '512' },
    /** Rounds of (raw, API) alternate so that a noisy neighbour weighs on both alike. */
    rounds: { type: 'string', default: '2' },
    /** Seconds of each, not counted, before the first round (connections, JIT). */
    warmup: { type: 'string', default: '2' },
    /** Write a CPU profile of the API process to bench/results/ (open it in Chrome DevTools). */
    profile: { type: 'boolean', default: false },
    /** Also run a second API with keys and limits on (a key with a rate and a concurrency cap it never reaches). */
    auth: { type: 'boolean', default: false },
  },
});
const DURATION_S = Number(flags.duration);
const ROUNDS = Math.max(1, Number(flags.rounds));
const WARMUP_S = Number(flags.warmup);
const CONCURRENCY = Number(flags.concurrency);
const SIDE = Number(flags.size);

const prefix = `bench-${Date.now().toString(36)}`;
const config = loadConfig({ ...process.env, TOPIC_PREFIX: prefix, S3_BUCKET: prefix, LOG_LEVEL: 'warn' });

interface Result {
  ok: number;
  failed: number;
  latencies: number[];
  seconds: number;
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

/** `concurrency` loops calling `once` until the time is up; latencies in ms. */
async function load(seconds: number, once: () => Promise<boolean>): Promise<Result> {
  const latencies: number[] = [];
  let ok = 0;
  let failed = 0;
  const started = performance.now();
  const end = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        const success = await once().catch(() => false);
        latencies.push(performance.now() - t);
        if (success) ok++;
        else failed++;
      }
    }),
  );
  return { ok, failed, latencies, seconds: (performance.now() - started) / 1000 };
}

function merge(results: Result[]): Result {
  return {
    ok: results.reduce((sum, r) => sum + r.ok, 0),
    failed: results.reduce((sum, r) => sum + r.failed, 0),
    latencies: results.flatMap((r) => r.latencies).sort((a, b) => a - b),
    seconds: results.reduce((sum, r) => sum + r.seconds, 0),
  };
}

/** A photo-like test image: smooth gradients with fine noise, so PNG compresses it as it would a photo. */
async function testImage(): Promise<Buffer> {
  const raw = Buffer.alloc(SIDE * SIDE * 3);
  for (let y = 0; y < SIDE; y++) {
    for (let x = 0; x < SIDE; x++) {
      const i = (y * SIDE + x) * 3;
      const noise = () => Math.floor(Math.random() * 24);
      raw[i] = ((x * 200) / SIDE + noise()) & 255;
      raw[i + 1] = ((y * 200) / SIDE + noise()) & 255;
      raw[i + 2] = (((x + y) * 100) / SIDE + noise()) & 255;
    }
  }
  return sharp(raw, { raw: { width: SIDE, height: SIDE, channels: 3 } }).blur(0.8).png().toBuffer();
}

function multipart(image: Buffer): { body: Buffer; contentType: string } {
  const boundary = `----bench${randomBytes(8).toString('hex')}`;
  const head = `--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="in.png"\r\nContent-Type: image/png\r\n\r\n`;
  return {
    body: Buffer.concat([Buffer.from(head), image, Buffer.from(`\r\n--${boundary}--\r\n`)]),
    contentType: `multipart/form-data; boundary=${boundary}`,
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

const PEPPER = 'bench-pepper-0123456789';

async function startApi(port: number, env: Record<string, string> = {}): Promise<ChildProcess> {
  const profile = flags.profile ? ['--cpu-prof', '--cpu-prof-dir=bench/results'] : [];
  const child = spawn(process.execPath, [...API_NODE_FLAGS, ...profile, '--import', 'tsx', ...COUNT_REQUESTS, 'api/main.ts'], {
    env: { ...process.env, TOPIC_PREFIX: prefix, S3_BUCKET: prefix, API_PORT: String(port), LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  for (let waited = 0; waited < 60_000; waited += 250) {
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
    if (ready) return child;
    if (child.exitCode !== null) throw new Error(`the API exited with ${child.exitCode}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error('the API did not become ready in 60 s');
}

/** CPU seconds used so far by each thread of `pid`, grouped by thread name (main, libuv pool, V8 helpers...). */
async function threadCpu(pid: number): Promise<Map<string, number>> {
  const ticks = 100; // USER_HZ on Linux
  const byName = new Map<string, number>();
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '');
    const match = /\((.*)\) (.*)$/.exec(stat.trim());
    if (!match) continue;
    const fields = match[2]!.split(' '); // from field 3 (state): utime and stime are fields 14 and 15
    const name = Number(tid) === pid ? 'main thread' : match[1]!.replace(/\d+$/, '').trim();
    byName.set(name, (byName.get(name) ?? 0) + (Number(fields[11]) + Number(fields[12])) / ticks);
  }
  return byName;
}

const cpuDelta = (after: Map<string, number>, before: Map<string, number>) =>
  new Map([...after].map(([name, seconds]) => [name, seconds - (before.get(name) ?? 0)]));

async function memoryKiB(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
}

async function main(): Promise<void> {
  const image = await testImage();
  const s3 = createS3(config);
  const written: string[] = [];

  const port = await freePort();
  const api = await startApi(port);
  const idleRss = await memoryKiB(api.pid!, 'VmRSS');

  console.log(
    `${SIDE}x${SIDE} PNG of ${(image.length / 1024).toFixed(0)} KiB, ${CONCURRENCY} clients, ${DURATION_S} s each ` +
      `in ${ROUNDS} alternating rounds after ${WARMUP_S} s of warm-up`,
  );
  let rawCount = 0;
  const rawPut = async () => {
    const Key = `bench/${prefix}/raw/${rawCount++}.png`;
    written.push(Key);
    await s3.send(new PutObjectCommand({ Bucket: config.S3_BUCKET, Key, Body: image, ContentType: 'image/png' }));
    return true;
  };

  const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const { body, contentType } = multipart(image);
  const path = `/api/diffusion?model_name=tiny&prompt=${encodeURIComponent('a benchmark lighthouse')}`;
  const poster = (target: number, headers: Record<string, string> = {}) => () =>
    new Promise<boolean>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: target, path, method: 'POST', agent, headers: { 'content-type': contentType, 'content-length': body.length, ...headers } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            if (res.statusCode === 202) written.push(...jobObjects(JSON.parse(Buffer.concat(chunks).toString()).id));
            resolve(res.statusCode === 202);
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const apiPost = poster(port);
  const keyed = flags.auth ? await startKeyedApi() : undefined;
  const keyedPost = keyed && poster(keyed.port, { authorization: `Bearer ${keyed.token}` });

  await load(WARMUP_S, rawPut);
  if (keyedPost) await load(WARMUP_S, keyedPost);
  await load(WARMUP_S, apiPost);
  const rawRounds: Result[] = [];
  const apiRounds: Result[] = [];
  const keyedRounds: Result[] = [];
  let cpu = new Map<string, number>();
  /** Seconds of CPU of the API with keys over its rounds (its jobs have a tenant, and so list entries). */
  let keyedCpu = 0;
  const meter = new Meter([{ name: 'API', pid: api.pid!, child: api }, { name: 'bench (clients)', pid: process.pid }, ...infraProcesses()], config);
  for (let round = 0; round < ROUNDS; round++) {
    rawRounds.push(await load(DURATION_S / ROUNDS, rawPut));
    const before = await threadCpu(api.pid!);
    await meter.begin();
    apiRounds.push(await load(DURATION_S / ROUNDS, apiPost));
    await meter.end();
    const used = cpuDelta(await threadCpu(api.pid!), before);
    cpu = new Map([...used].map(([name, seconds]) => [name, seconds + (cpu.get(name) ?? 0)]));
    if (keyedPost) {
      const before = await threadCpu(keyed!.child.pid!);
      keyedRounds.push(await load(DURATION_S / ROUNDS, keyedPost));
      keyedCpu += [...cpuDelta(await threadCpu(keyed!.child.pid!), before).values()].reduce((sum, seconds) => sum + seconds, 0);
    }
  }
  agent.destroy();
  const [raw, viaApi] = [merge(rawRounds), merge(apiRounds)];
  const peakRss = await memoryKiB(api.pid!, 'VmHWM');

  report(raw, viaApi, idleRss, peakRss);
  if (keyed) {
    const withKeys = merge(keyedRounds);
    const rate = (r: Result) => r.ok / r.seconds;
    console.log(
      `with keys and limits (Bearer check, Redis rate and slot per request): ${rate(withKeys).toFixed(1)} req/s, ` +
        `p50 ${percentile(withKeys.latencies, 50).toFixed(1)} ms, p99 ${percentile(withKeys.latencies, 99).toFixed(1)} ms, ${withKeys.failed} failed; ` +
        `${((100 * rate(withKeys)) / rate(viaApi)).toFixed(0)}% of the rate without keys, p50 ${(percentile(withKeys.latencies, 50) / percentile(viaApi.latencies, 50)).toFixed(2)}x; ` +
        `its CPU ${((1000 * keyedCpu) / Math.max(1, withKeys.ok)).toFixed(1)} ms a job`,
    );
    await stop(keyed.child);
  }
  const perRequest = [...cpu].filter(([, seconds]) => seconds > 0.05).sort((a, b) => b[1] - a[1]);
  console.log(`API CPU per request: ${perRequest.map(([name, s]) => `${name} ${((1000 * s) / Math.max(1, viaApi.ok)).toFixed(1)} ms`).join(', ')}`);
  console.log(meter.report(viaApi.ok).join('\n'));
  const exit = await stop(api);
  console.log(`API exit code after SIGTERM: ${exit}`);
  await cleanUp(written);
}

/** A second API with keys on, and a key whose limits the load never reaches (so every check runs). */
async function startKeyedApi(): Promise<{ child: ChildProcess; port: number; token: string }> {
  const store = new ObjectStore(config);
  const { token } = await new KeyStore(store, PEPPER).create({
    tenant: 'bench',
    name: 'bench',
    role: 'user',
    limits: { rate: { points: 1_000_000, per_seconds: 60 }, concurrency: 1_000_000 },
  });
  const port = await freePort();
  const child = await startApi(port, { AUTH: 'on', AUTH_PEPPER: PEPPER });
  return { child, port, token };
}

const jobObjects = (id: string) => [`jobs/${id}/input.png`, `jobs/${id}/job.json`];

function report(raw: Result, viaApi: Result, idleRssKiB: number, peakRssKiB: number): void {
  const rate = (r: Result) => r.ok / r.seconds;
  const row = (name: string, r: Result) => [
    name,
    rate(r).toFixed(1),
    percentile(r.latencies, 50).toFixed(1),
    percentile(r.latencies, 99).toFixed(1),
    String(r.ok),
    String(r.failed),
  ];
  const rows = [
    ['', 'req/s', 'p50 ms', 'p99 ms', 'ok', 'failed'],
    row('raw S3 PUT', raw),
    row('POST /api/diffusion', viaApi),
    [
      'API / raw',
      `${((100 * rate(viaApi)) / rate(raw)).toFixed(0)}%`,
      `${(percentile(viaApi.latencies, 50) / percentile(raw.latencies, 50)).toFixed(2)}x`,
      `${(percentile(viaApi.latencies, 99) / percentile(raw.latencies, 99)).toFixed(2)}x`,
      '',
      '',
    ],
  ];
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows) console.log(`| ${r.map((cell, c) => (c ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join(' | ')} |`);
  console.log(`API RSS: ${(idleRssKiB / 1024).toFixed(0)} MiB idle, ${(peakRssKiB / 1024).toFixed(0)} MiB peak (VmHWM)`);
  const goals = [
    [`rate >= 60% of raw`, rate(viaApi) >= 0.6 * rate(raw)],
    [`p99 <= 3x raw`, percentile(viaApi.latencies, 99) <= 3 * percentile(raw.latencies, 99)],
    [`peak RSS <= 250 MiB`, peakRssKiB <= 250 * 1024],
  ] as const;
  console.log(goals.map(([goal, met]) => `${met ? 'met' : 'MISSED'}: ${goal}`).join('; '));
}

function stop(child: ChildProcess): Promise<number | null> {
  return new Promise((resolve) => {
    child.once('exit', (code) => resolve(code));
    child.kill('SIGTERM');
  });
}

/** The bench's objects and topics are of no use afterwards. */
async function cleanUp(keys: string[]): Promise<void> {
  const s3 = createS3(config);
  for (let i = 0; i < keys.length; i += 1000) {
    const Objects = keys.slice(i, i + 1000).map((Key) => ({ Key }));
    await s3.send(new DeleteObjectsCommand({ Bucket: config.S3_BUCKET, Delete: { Objects, Quiet: true } }));
  }
  const models = (await readModelNames(config.MODEL_NAMES_FILE)).map((entry) => entry.name);
  await dropTopics(config, allTopics(prefix, models)).catch(() => {});
  await dropBucket(config);
  console.log(`cleaned up ${keys.length} objects, the ${prefix}.* topics and the bucket ${prefix}`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
