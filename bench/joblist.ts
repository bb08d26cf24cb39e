// Benchmark of GET /api/jobs with a large bucket: N jobs of T tenants seeded directly (records
// and list entries, as the API and the outbox write them: common/joblist.ts), then pages of 50
// read one request at a time: each tenant's newest page, pages deep in a tenant's list by cursor,
// an admin's page of every tenant and its next pages, and status filters; the baseline is
// GET /api/jobs/{id} (one record) in the same run. A bucket seeded with another layout of the
// index lists nothing or out of order: seed a new one.
// Not a test: `npm run bench:joblist -- --jobs 100000 --tenants 10`.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { parseArgs } from 'node:util';
import { DeleteObjectsCommand } from '@aws-sdk/client-s3';
import { loadConfig } from '../common/config.js';
import { addToEndedList, addToList } from '../common/joblist.js';
import { newJobId, type JobRecord } from '../common/jobs.js';
import { KeyStore } from '../common/keys.js';
import * as lifecycle from '../common/lifecycle.js';
import { API_NODE_FLAGS } from '../common/nodeflags.js';
import { readModelNames } from '../common/models.js';
import { createS3, ObjectStore } from '../common/storage.js';
import { allTopics } from '../common/topics.js';
import { dropTopics } from './topics.js';

const { values: flags } = parseArgs({
  options: {
    jobs: { type: 'string', default: '100000' },
    tenants: { type: 'string', default: '10' },
    requests: { type: 'string', default: '200' },
    /** Keep the bucket (to rerun the reads with --bucket) instead of deleting it. */
    keep: { type: 'boolean', default: false },
    /** Read an already seeded bucket. */
    bucket: { type: 'string' },
  },
});
const JOBS = Number(flags.jobs);
const TENANTS = Number(flags.tenants);
// checkAdminPages compares an admin's first 1000 jobs and first 200 succeeded (1 in 10), and the timed reads use three tenants.
if (JOBS < 2000 || TENANTS < 3) throw new Error('--jobs must be at least 2000 and --tenants at least 3');
const REQUESTS = Number(flags.requests);
const PEPPER = 'bench-pepper-0123456789';
const bucket = flags.bucket ?? `bench-joblist-${Date.now().toString(36)}`;
const topicPrefix = `bench-joblist-${Date.now().toString(36)}`;
const config = loadConfig({ ...process.env, S3_BUCKET: bucket, AUTH: 'on', AUTH_PEPPER: PEPPER, LOG_LEVEL: 'warn', TOPIC_PREFIX: topicPrefix });
const store = new ObjectStore(config);
const tenantName = (n: number) => `tenant-${n}`;
const params = { prompt: 'a lighthouse', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 };

/** Runs `work(i)` for i < count, `concurrency` at a time. */
async function pool(count: number, concurrency: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) await work(next++);
  }));
}

/** N jobs over the last N minutes, round robin over the tenants; a tenth of each tenant's succeeded. */
async function seed(): Promise<void> {
  await store.ensureBucket();
  const started = performance.now();
  const now = Date.now();
  await pool(JOBS, 64, async (i) => {
    const job = {
      id: newJobId(), model_name: 'tiny', priority: 'normal' as const, params, width: 512, height: 512,
      input_key: 'unused', idempotency: null, tenant: tenantName(i % TENANTS),
    };
    let record: JobRecord = lifecycle.queued(job, { now: new Date(now - (JOBS - i) * 60_000) }).record;
    if (Math.floor(i / TENANTS) % 10 === 0) record = { ...record, status: 'succeeded', output_key: 'unused', outbox: [] };
    else record = { ...record, outbox: [] };
    await Promise.all([store.put(`jobs/${record.id}/job.json`, JSON.stringify(record), 'application/json'), addToList(store, record), addToEndedList(store, record)]);
    if (i % 10_000 === 9_999) console.log(`seeded ${i + 1} jobs (${((performance.now() - started) / 1000).toFixed(0)} s)`);
  });
  console.log(`seeded ${JOBS} jobs of ${TENANTS} tenants in ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

async function timed(urls: () => string | undefined, token: string): Promise<number[]> {
  const latencies: number[] = [];
  for (let n = 0; n < REQUESTS; n++) {
    const url = urls();
    if (!url) break;
    const started = performance.now();
    const response = await fetch(url, { headers: { Authorization: `Bearer ${token}` } });
    const body = await response.json();
    latencies.push(performance.now() - started);
    if (response.status !== 200) throw new Error(`${url}: ${response.status} ${JSON.stringify(body)}`);
    lastBody = body;
  }
  return latencies.sort((a, b) => a - b);
}
let lastBody: Record<string, any> = {};

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });

/** The API as production runs it (api/main.ts), on the seeded bucket with keys on; ready once /readyz answers. */
async function startApi(): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const env = { ...process.env, S3_BUCKET: bucket, AUTH: 'on', AUTH_PEPPER: PEPPER, API_PORT: String(port), LOG_LEVEL: 'warn', TOPIC_PREFIX: topicPrefix };
  const child = spawn(process.execPath, [...API_NODE_FLAGS, '--import', 'tsx', 'api/main.ts'], { env, stdio: ['ignore', 'inherit', 'inherit'] });
  // Also when a request fails: a child left running would hold the benchmark's output open.
  process.on('exit', () => child.kill('SIGTERM'));
  const url = `http://127.0.0.1:${port}`;
  for (let waited = 0; waited < 60_000; waited += 250) {
    if (await fetch(`${url}/readyz`).then((r) => r.ok, () => false)) return { child, url };
    if (child.exitCode !== null) throw new Error(`the API exited with ${child.exitCode}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error('the API did not become ready in 60 s');
}

async function main(): Promise<void> {
  if (!flags.bucket) await seed();
  // Keys first: with keys on, the API does not start without one.
  const keys = new KeyStore(store, PEPPER);
  const tokens = await Promise.all(Array.from({ length: TENANTS }, async (_, n) => (await keys.create({ tenant: tenantName(n), name: 'bench', role: 'user', limits: { rate: null, concurrency: null } })).token));
  const admin = (await keys.create({ tenant: 'ops', name: 'bench-admin', role: 'admin', limits: { rate: null, concurrency: null } })).token;
  const { child, url } = await startApi();

  const first = await (await fetch(`${url}/api/jobs?limit=1`, { headers: { Authorization: `Bearer ${tokens[0]}` } })).json();
  const oneId = first.jobs[0].id as string;
  const rows: [string, number[]][] = [];
  rows.push(['GET /api/jobs/{id} (baseline)', await timed(() => `${url}/api/jobs/${oneId}`, tokens[0]!)]);
  let turn = 0;
  rows.push(['newest page of a tenant', await timed(() => `${url}/api/jobs?limit=50`, tokens[turn++ % TENANTS]!)]);
  let cursor: string | undefined;
  rows.push(['next pages of a tenant (cursor)', await timed(() => {
    cursor = lastBody.next_cursor ?? cursor;
    return `${url}/api/jobs?limit=50${cursor ? `&cursor=${cursor}` : ''}`;
  }, tokens[1]!)]);
  rows.push(['admin: every tenant', await timed(() => `${url}/api/jobs?limit=50`, admin)]);
  cursor = undefined;
  lastBody = {};
  rows.push(['admin: next pages (cursor)', await timed(() => {
    cursor = lastBody.next_cursor ?? cursor;
    return `${url}/api/jobs?limit=50${cursor ? `&cursor=${cursor}` : ''}`;
  }, admin)]);
  rows.push(['admin: status=succeeded (its own list)', await timed(() => `${url}/api/jobs?limit=50&status=succeeded`, admin)]);
  rows.push(['status=succeeded (1 in 10: its own list)', await timed(() => `${url}/api/jobs?limit=50&status=succeeded`, tokens[2]!)]);
  rows.push(['status=queued (9 in 10: the records read)', await timed(() => `${url}/api/jobs?limit=50&status=queued`, tokens[2]!)]);

  await checkAdminPages(url, admin, tokens, 'succeeded');
  const base = percentile(rows[0]![1], 50);
  console.log(`\n${JOBS} jobs of ${TENANTS} tenants, pages of 50, ${REQUESTS} requests each, one at a time\n`);
  console.log('| request | p50 ms | p99 ms | p50 / baseline p50 |\n| --- | --- | --- | --- |');
  for (const [name, latencies] of rows) {
    console.log(`| ${name} | ${percentile(latencies, 50).toFixed(1)} | ${percentile(latencies, 99).toFixed(1)} | ${(percentile(latencies, 50) / base).toFixed(1)}x |`);
  }
  child.kill('SIGTERM');
  const models = (await readModelNames(config.MODEL_NAMES_FILE)).map((entry) => entry.name);
  await dropTopics(config, allTopics(topicPrefix, models)).catch((error: unknown) => console.error(`could not delete the ${topicPrefix}.* topics:`, error));
  if (!flags.keep && !flags.bucket) await emptyBucket();
  process.exit(0);
}

/** The first `count` jobs of a list, by pages of 100. */
async function firstJobs(url: string, token: string, count: number, query = ''): Promise<{ id: string; created_at: string }[]> {
  const jobs: { id: string; created_at: string }[] = [];
  let cursor: string | null = null;
  do {
    const response: Response = await fetch(`${url}/api/jobs?limit=100${query}${cursor ? `&cursor=${cursor}` : ''}`, { headers: { Authorization: `Bearer ${token}` } });
    const body: { jobs: { id: string; created_at: string }[]; next_cursor: string | null } = await response.json();
    jobs.push(...body.jobs);
    cursor = body.next_cursor;
  } while (cursor && jobs.length < count);
  return jobs.slice(0, count);
}

/**
 * Not timed: an admin's first 1000 jobs (and first 200 succeeded) by cursor are exactly the
 * newest of the tenants' own lists merged, each once; throws where they differ.
 */
async function checkAdminPages(url: string, admin: string, tokens: string[], status: string): Promise<void> {
  for (const [count, query] of [[1000, ''], [200, `&status=${status}`]] as const) {
    const fromAdmin = (await firstJobs(url, admin, count, query)).map((job) => job.id);
    const fromTenants = (await Promise.all(tokens.map((token) => firstJobs(url, token, count, query))))
      .flat()
      .sort((a, b) => (a.created_at > b.created_at ? -1 : a.created_at < b.created_at ? 1 : a.id < b.id ? -1 : 1))
      .slice(0, count)
      .map((job) => job.id);
    if (new Set(fromAdmin).size !== count || fromAdmin.join() !== fromTenants.join()) throw new Error(`an admin's pages${query} differ from the tenants' pages merged`);
  }
  console.log(`checked: an admin's first 1000 jobs and first 200 ${status} by cursor are the tenants' own, merged, each once`);
}

async function emptyBucket(): Promise<void> {
  const s3 = createS3(config);
  const keys: string[] = [];
  for await (const object of store.list('')) keys.push(object.key);
  for (let i = 0; i < keys.length; i += 1000) {
    await s3.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }));
  }
  console.log(`deleted bucket contents (${keys.length} objects)`);
}

await main();
