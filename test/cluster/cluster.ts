// The clusters of the cluster suite: three KRaft nodes and four MinIO servers that scripts/infra
// runs on ports and in a state folder of their own (never the single-node servers the other
// suites use), and the tools to find a leader, kill a node and start it again.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { Kafka, logLevel, type Admin } from 'kafkajs';

export const STATE_DIR = resolve('.infra/cluster');
export const KAFKA_NODES = 3;
export const MINIO_NODES = 4;
const KAFKA_PORT = 19092;
const MINIO_PORT = 19000;
/** scripts/infra puts node i on the base port + 10 (i - 1). */
const STRIDE = 10;

/** What scripts/infra needs to act on the clusters instead of the default servers. */
export const clusterEnv: Record<string, string> = {
  IMG2IMG_STATE_DIR: STATE_DIR,
  KAFKA_NODES: String(KAFKA_NODES),
  KAFKA_PORT: String(KAFKA_PORT),
  KAFKA_CONTROLLER_PORT: String(KAFKA_PORT + 1),
  MINIO_NODES: String(MINIO_NODES),
  MINIO_PORT: String(MINIO_PORT),
  MINIO_CONSOLE_PORT: String(MINIO_PORT + 1),
};

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/** Every bootstrap address, as clients get them (KAFKA_BROKERS). */
export const kafkaBrokers = range(KAFKA_NODES)
  .map((node) => `127.0.0.1:${KAFKA_PORT + STRIDE * (node - 1)}`)
  .join(',');
export const minioEndpoint = (node: number) => `http://127.0.0.1:${MINIO_PORT + STRIDE * (node - 1)}`;

export function infra(...args: string[]): void {
  execFileSync('bash', ['scripts/infra', ...args], { env: { ...process.env, ...clusterEnv }, stdio: 'inherit' });
}

/** infra() without blocking this process: the API under test runs in it and must keep answering. */
export function infraAsync(...args: string[]): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn('bash', ['scripts/infra', ...args], { env: { ...process.env, ...clusterEnv }, stdio: ['ignore', 'inherit', 'inherit'] });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolvePromise() : reject(new Error(`scripts/infra ${args.join(' ')} exited ${code}`))));
  });
}

type Node = `kafka-${number}` | `minio-${number}`;

/** The pid scripts/infra recorded for a node, checked to be that node's process (never another). */
export function pidOf(node: Node): number {
  const pid = Number(readFileSync(`${STATE_DIR}/run/${node}.pid`, 'utf8').trim());
  const command = existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, 'utf8') : '';
  if (!command.includes(STATE_DIR)) throw new Error(`${node}: pid ${pid} is not a process of ${STATE_DIR}`);
  return pid;
}

export const nodes = {
  /** SIGKILL: no shutdown, no goodbye to the cluster; returns the moment it was sent. */
  kill(node: Node): number {
    process.kill(pidOf(node), 'SIGKILL');
    return Date.now();
  },
  /** Starts the node again (scripts/infra up waits until it answers and sees every broker); the seconds it took. */
  async start(node: Node): Promise<number> {
    const started = Date.now();
    await infraAsync('up', node);
    return (Date.now() - started) / 1000;
  },
};

/** The KRaft quorum's leader and epoch, as a live voter last recorded them in its quorum-state file. */
export function controllerLeader(except?: number): { leader: number; epoch: number } {
  for (const node of range(KAFKA_NODES)) {
    if (node === except) continue;
    const file = `${STATE_DIR}/kafka-${node}/data/__cluster_metadata-0/quorum-state`;
    if (!existsSync(file)) continue;
    const state = JSON.parse(readFileSync(file, 'utf8')) as { leaderId: number; leaderEpoch: number };
    if (state.leaderId >= 1) return { leader: state.leaderId, epoch: state.leaderEpoch };
  }
  throw new Error('no voter has recorded a controller leader');
}

export interface PartitionState {
  topic: string;
  partition: number;
  leader: number;
  isr: number[];
}

export async function partitions(admin: Admin, topics: string[]): Promise<PartitionState[]> {
  const { topics: metadata } = await admin.fetchTopicMetadata({ topics });
  return metadata.flatMap(({ name, partitions: parts }) =>
    parts.map((p) => ({ topic: name, partition: p.partitionId, leader: p.leader, isr: p.isr })),
  );
}

/** The broker that leads the most of these partitions, leaving out `except` (the controller leader). */
export function busiestLeader(states: PartitionState[], except?: number): number {
  const led = new Map<number, number>();
  for (const { leader } of states) if (leader !== except) led.set(leader, (led.get(leader) ?? 0) + 1);
  const [broker] = [...led.entries()].sort((a, b) => b[1] - a[1])[0] ?? [];
  if (broker === undefined) throw new Error('no partition has a leader');
  return broker;
}

/**
 * Resolves once every broker answers metadata for `topics` with a leader for each partition. A
 * new topic reaches each broker's metadata a moment after its creation (later on a broker that has
 * just restarted), and kafkajs' subscribe gives up on a broker that does not know it yet.
 */
export async function topicsOnEveryBroker(topics: string[], timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const broker of kafkaBrokers.split(',')) {
    for (;;) {
      // A fresh client asks its one seed broker first.
      const admin = new Kafka({ clientId: 'cluster-check', brokers: [broker], logLevel: logLevel.NOTHING, retry: { retries: 0 } }).admin();
      const known = await admin
        .connect()
        .then(() => admin.fetchTopicMetadata({ topics }))
        .then(({ topics: found }) => found.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0)))
        .catch(() => false)
        .finally(() => admin.disconnect().catch(() => {}));
      if (known) break;
      if (Date.now() > deadline) throw new Error(`${broker} does not know ${topics.join(', ')} after ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}
