// A model's measured pace: each consumer process serving the model writes its own small stats
// record (models/<name>/stats/<consumer>.json) every few seconds while it works; the API adds
// them up into the model's rate, which queue-time estimates divide by.
import { z } from 'zod';
import type { ObjectStore } from './storage.js';

export const ConsumerStats = z.object({
  v: z.literal(1),
  model: z.string(),
  consumer: z.string(),
  updated_at: z.string(),
  /** Jobs its runners started and have not finished (their records say running). */
  running: z.number().int(),
  /** Jobs ended (any ending) per second the consumer was busy, over its last minute of work; null before the first. */
  jobs_per_second: z.number().nullable(),
  /** Mean seconds from a job's start to its success, over the same minute; null without one. */
  mean_run_s: z.number().nullable(),
  /** Jobs ended in that minute: the weight of this consumer's mean. */
  ended: z.number().int(),
});
export type ConsumerStats = z.infer<typeof ConsumerStats>;

/** A model's pace, all its consumers together. */
export interface ModelStats {
  running: number;
  jobs_per_second: number | null;
  mean_run_s: number | null;
  /** The newest of the records it was added up from. */
  updated_at: string | null;
}

/** A consumer writes at least this often while it lives; a record older than this is a consumer that stopped. */
export const STATS_HEARTBEAT_MS = 30_000;
const STALE_MS = 3 * STATS_HEARTBEAT_MS;
/** Records of consumers gone this long are deleted by the reader that finds them. */
const FORGET_MS = 10 * 60_000;

export const statsPrefix = (model: string) => `models/${model}/stats/`;
export const statsKey = (model: string, consumer: string) => `${statsPrefix(model)}${consumer}.json`;

export async function writeConsumerStats(store: ObjectStore, stats: ConsumerStats, signal?: AbortSignal): Promise<void> {
  await store.put(statsKey(stats.model, stats.consumer), JSON.stringify(stats), 'application/json', signal);
}

/** Sums the consumers' records: rates add up, means are weighted by the jobs they were measured on. */
export function combineStats(records: readonly ConsumerStats[]): ModelStats {
  const measured = records.filter((r) => r.jobs_per_second !== null);
  const timed = records.filter((r) => r.mean_run_s !== null && r.ended > 0);
  const weight = timed.reduce((sum, r) => sum + r.ended, 0);
  return {
    running: records.reduce((sum, r) => sum + r.running, 0),
    jobs_per_second: measured.length ? measured.reduce((sum, r) => sum + r.jobs_per_second!, 0) : null,
    mean_run_s: weight ? timed.reduce((sum, r) => sum + r.mean_run_s! * r.ended, 0) / weight : null,
    updated_at: records.reduce<string | null>((newest, r) => (newest === null || r.updated_at > newest ? r.updated_at : newest), null),
  };
}

/** The model's pace from the records of its live consumers. */
export async function readModelStats(store: ObjectStore, model: string, signal?: AbortSignal): Promise<ModelStats> {
  const now = Date.now();
  const live: string[] = [];
  for await (const { key, lastModified } of store.list(statsPrefix(model), signal)) {
    const age = now - lastModified.getTime();
    if (age < STALE_MS) live.push(key);
    else if (age > FORGET_MS) void store.delete(key).catch(() => {});
  }
  const records = await Promise.all(live.map((key) => store.getBytes(key, signal).then(parseStats)));
  return combineStats(records.filter((r): r is ConsumerStats => r !== undefined));
}

function parseStats(bytes: Buffer | undefined): ConsumerStats | undefined {
  if (!bytes) return undefined;
  try {
    const parsed = ConsumerStats.safeParse(JSON.parse(bytes.toString('utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
