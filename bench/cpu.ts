// CPU time and requests per job of the processes a benchmark drives, over the windows it measures:
// - CPU: user+system time of each process from /proc/<pid>/stat (all its threads; a row of its own
//   for a service's child processes, e.g. the consumer's runner), clock ticks from `getconf CLK_TCK`;
// - S3 requests: what MinIO counted on the benchmark's own bucket (minio_bucket_api_total of its
//   Prometheus endpoint; bench/bucket.ts), and the commands each service sent;
// - Kafka requests: what each service's kafkajs clients sent, by API (bench/requests.ts, preloaded).
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StorageConfig } from '../common/config.js';

/** A process to watch; `child`: a service spawned with COUNT_REQUESTS and an 'ipc' stdio slot; `descendants`: the row name of its child processes. */
export interface Watched {
  name: string;
  pid: number;
  child?: ChildProcess;
  descendants?: string;
}

type Counts = Record<string, number>;

/** node flags that preload the request counter into a service. */
export const COUNT_REQUESTS = ['--import', fileURLToPath(new URL('./requests.ts', import.meta.url))];

const TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

async function cpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return 0;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // from field 3 (state): utime, stime are 14, 15
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS;
}

async function descendants(pid: number): Promise<number[]> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => []);
  const direct = (await Promise.all(tasks.map((tid) => readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => ''))))
    .flatMap((text) => text.split(' ').filter(Boolean))
    .map(Number);
  return [...direct, ...(await Promise.all(direct.map(descendants))).flat()];
}

/** MinIO and Kafka servers started by scripts/infra, from its pid files. */
export function infraProcesses(stateDir = process.env.IMG2IMG_STATE_DIR ?? resolve('.infra')): Watched[] {
  const run = join(stateDir, 'run');
  const files = (() => {
    try {
      return readdirSync(run);
    } catch {
      return [];
    }
  })();
  return files.flatMap((file) => {
    const match = /^(minio|kafka)(-\d+)?\.pid$/.exec(file);
    if (!match) return [];
    const name = `${match[1] === 'minio' ? 'MinIO' : 'Kafka'}${match[2] ?? ''}`;
    return [{ name, pid: Number(readFileSync(join(run, file), 'utf8').trim()) }];
  });
}

/** MinIO's count of S3 requests on the bucket, by API. It wants a bearer JWT signed with the S3 secret key (what `mc admin prometheus generate` makes). */
async function minioRequests(storage: StorageConfig): Promise<Map<string, number>> {
  const part = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const unsigned = `${part({ alg: 'HS512', typ: 'JWT' })}.${part({ exp: Math.floor(Date.now() / 1000) + 300, iss: 'prometheus', sub: storage.S3_ACCESS_KEY })}`;
  const token = `${unsigned}.${createHmac('sha512', storage.S3_SECRET_KEY).update(unsigned).digest('base64url')}`;
  // The v3 bucket metrics are counted as requests come; the v2 ones are cached for seconds.
  const response = await fetch(new URL(`/minio/metrics/v3/bucket/api/${storage.S3_BUCKET}`, storage.S3_ENDPOINT), { headers: { authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`MinIO metrics: HTTP ${response.status}`);
  const counts = new Map<string, number>();
  for (const [, api, value] of (await response.text()).matchAll(/^minio_bucket_api_total\{[^}]*\bname="([^"]+)"[^}]*\} (\S+)$/gm)) {
    counts.set(api!, (counts.get(api!) ?? 0) + Number(value));
  }
  return counts;
}

function childRequests(child: ChildProcess): Promise<{ kafka: Counts; s3: Counts }> {
  return new Promise((done, fail) => {
    const answer = (message: { requests?: { kafka: Counts; s3: Counts } }) => {
      if (!message?.requests) return;
      clearTimeout(timer);
      child.off('message', answer);
      done(message.requests);
    };
    const timer = setTimeout(() => {
      child.off('message', answer);
      fail(new Error(`pid ${child.pid} did not report its requests (is it preloaded with bench/requests.ts?)`));
    }, 5000);
    child.on('message', answer);
    child.send('requests?');
  });
}

interface Sample {
  cpu: Map<string, number>;
  minio: Map<string, number>;
  kafka: Map<string, Counts>;
  s3: Map<string, Counts>;
  at: number;
}

const add = (into: Map<string, number>, key: string, value: number) => into.set(key, (into.get(key) ?? 0) + value);

/** Sums, over the windows between begin() and end(), the CPU and requests of the watched processes. */
export class Meter {
  private seconds = 0;
  private readonly cpu = new Map<string, number>();
  private readonly minio = new Map<string, number>();
  private readonly kafka = new Map<string, Map<string, number>>();
  private readonly s3 = new Map<string, Map<string, number>>();
  private started?: Sample;

  constructor(
    private readonly processes: Watched[],
    private readonly storage: StorageConfig,
  ) {}

  async begin(): Promise<void> {
    this.started = await this.sample();
  }

  async end(): Promise<void> {
    const [before, after] = [this.started!, await this.sample()];
    this.seconds += (after.at - before.at) / 1000;
    for (const [name, ms] of after.cpu) add(this.cpu, name, ms - (before.cpu.get(name) ?? 0));
    for (const [api, n] of after.minio) add(this.minio, api, n - (before.minio.get(api) ?? 0));
    for (const [counts, into] of [[after.kafka, this.kafka], [after.s3, this.s3]] as const) {
      const was = counts === after.kafka ? before.kafka : before.s3;
      for (const [name, byApi] of counts) {
        const row = into.get(name) ?? new Map<string, number>();
        for (const [api, n] of Object.entries(byApi)) add(row, api, n - (was.get(name)?.[api] ?? 0));
        into.set(name, row);
      }
    }
  }

  private async sample(): Promise<Sample> {
    const cpu = new Map<string, number>();
    const kafka = new Map<string, Counts>();
    const s3 = new Map<string, Counts>();
    const [minio] = await Promise.all([
      minioRequests(this.storage),
      ...this.processes.map(async (p) => {
        cpu.set(p.name, await cpuMs(p.pid));
        if (p.descendants) cpu.set(p.descendants, (await Promise.all((await descendants(p.pid)).map(cpuMs))).reduce((a, b) => a + b, 0));
        if (p.child) {
          const counted = await childRequests(p.child);
          kafka.set(p.name, counted.kafka);
          s3.set(p.name, counted.s3);
        }
      }),
    ]);
    return { cpu, minio, kafka, s3, at: performance.now() };
  }

  /** The table and the requests per job, as lines to print. */
  report(jobs: number): string[] {
    const perJob = (n: number) => (n / Math.max(1, jobs)).toFixed(2);
    const total = [...this.cpu.values()].reduce((a, b) => a + b, 0);
    const sum = (row?: Map<string, number>) => (row ? [...row.values()].reduce((a, b) => a + b, 0) : undefined);
    const sumAll = (rows: Map<string, Map<string, number>>) => [...rows.values()].reduce((a, row) => a + sum(row)!, 0);
    const order = this.processes.flatMap((p) => (p.descendants ? [p.name, p.descendants] : [p.name]));
    const rows = [
      ['process', 'CPU ms/job', 'share', 'S3 req/job', 'Kafka req/job'],
      ...order.map((name) => {
        const [s3, kafka] = [sum(this.s3.get(name)), sum(this.kafka.get(name))];
        const ms = this.cpu.get(name) ?? 0;
        return [name, (ms / Math.max(1, jobs)).toFixed(1), `${((100 * ms) / Math.max(1, total)).toFixed(0)}%`, s3 === undefined ? '' : perJob(s3), kafka === undefined ? '' : perJob(kafka)];
      }),
      ['all of these', (total / Math.max(1, jobs)).toFixed(1), '100%', perJob(sumAll(this.s3)), perJob(sumAll(this.kafka))],
    ];
    const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
    const breakdown = (row: Map<string, number>) =>
      [...row]
        .filter(([, n]) => n / jobs >= 0.005)
        .sort((a, b) => b[1] - a[1])
        .map(([api, n]) => `${api} ${perJob(n)}`)
        .join(', ');
    const byProcess = (counts: Map<string, Map<string, number>>) => [...counts].map(([name, row]) => `${name}: ${breakdown(row) || 'none'}`).join('; ');
    return [
      `CPU per job over ${jobs} jobs in ${this.seconds.toFixed(1)} s (user+sys from /proc/<pid>/stat at ${TICKS} ticks/s):`,
      ...rows.map((r) => `| ${r.map((cell, c) => (c ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join(' | ')} |`),
      `S3 requests/job on bucket ${this.storage.S3_BUCKET} counted by MinIO: ${perJob(sum(this.minio) ?? 0)} (${breakdown(this.minio) || 'none'}); sent, by process: ${byProcess(this.s3)}`,
      `Kafka requests/job sent, by process: ${byProcess(this.kafka)}`,
    ];
  }
}
