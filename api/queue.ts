// The queue as users see it: where a queued job stands (its position, and when it should start
// and finish at the model's measured pace) and each model's queued and running jobs and pace.
// Positions come from Kafka (common/position.ts), the pace from the consumers' stats records
// (common/stats.ts); both are cached, so reading them per request stays cheap.
import type { ModelDepth, QueueDepth } from '../common/depth.js';
import { race } from '../common/deadline.js';
import type { JobRecord } from '../common/jobs.js';
import type { Logger } from '../common/logger.js';
import type { QueuePositions } from '../common/position.js';
import { readModelStats, type ModelStats } from '../common/stats.js';
import type { ObjectStore } from '../common/storage.js';
import { NO_STANDING, type JobStanding } from '../common/view.js';

/** A standing Kafka cannot give within this long is left out (null): the job's record answers without it. */
const LOOKUP_MS = 1000;
/** After a lookup that failed or took too long, standings are left out at once for this long: a Kafka outage costs GET no second. */
const BACK_OFF_MS = 5000;

/**
 * When a job `position` jobs from the front starts and ends, at the model's pace: the jobs ahead
 * that already run are on their way out, so it starts once the others have ended. Nulls where
 * the pace is unknown.
 */
export function estimate(position: number, stats: ModelStats | undefined, now = Date.now()): Omit<JobStanding, 'queue_position'> {
  const rate = stats?.jobs_per_second;
  if (!rate || rate <= 0) return { estimated_start_at: null, estimated_finish_at: null };
  const start = now + (Math.max(0, position - stats.running) / rate) * 1000;
  const run = stats.mean_run_s;
  return { estimated_start_at: new Date(start).toISOString(), estimated_finish_at: run === null ? null : new Date(start + run * 1000).toISOString() };
}

export interface ModelLoad {
  /** Jobs waiting: the queue's depth less the running ones. */
  queued: number;
  running: number;
  rate: { jobs_per_second: number; mean_run_s: number | null; updated_at: string } | null;
}

/** A model's load from its depth and its consumers' stats (running jobs are part of the depth until their offsets are committed). */
export function loadOf(depth: ModelDepth, stats: ModelStats | undefined): ModelLoad {
  const running = Math.min(stats?.running ?? 0, depth.total);
  const pace = stats?.jobs_per_second;
  return {
    queued: depth.total - running,
    running,
    rate: pace && stats.updated_at ? { jobs_per_second: pace, mean_run_s: stats.mean_run_s, updated_at: stats.updated_at } : null,
  };
}

export class QueueView {
  private cached: { at: number; value: Promise<Map<string, ModelStats>> } | undefined;
  private skipUntil = 0;

  constructor(
    private readonly deps: { positions: Pick<QueuePositions, 'of'>; depth: Pick<QueueDepth, 'get'>; store: ObjectStore; models: readonly string[]; log: Logger },
    private readonly ttlMs = 2000,
  ) {}

  /** Where the job stands while queued; nulls otherwise, and when Kafka or the stats cannot be read in time. */
  async standing(record: JobRecord): Promise<JobStanding> {
    if (record.status !== 'queued' || !record.queue || Date.now() < this.skipUntil) return NO_STANDING;
    try {
      const lookup = Promise.all([this.deps.positions.of(record), this.stats().catch(() => undefined)]);
      const [position, stats] = await race(lookup, AbortSignal.timeout(LOOKUP_MS));
      if (position === undefined) return NO_STANDING;
      return { queue_position: position, ...estimate(position, stats?.get(record.model_name)) };
    } catch (error) {
      this.skipUntil = Date.now() + BACK_OFF_MS;
      this.deps.log.debug({ err: error, job: record.id }, 'queue position unavailable');
      return NO_STANDING;
    }
  }

  /** Each model's queued and running jobs and its pace; throws when Kafka cannot be read. */
  async loads(): Promise<Map<string, ModelLoad>> {
    const [depths, stats] = await Promise.all([this.deps.depth.get(), this.stats().catch(() => undefined)]);
    return new Map([...depths].map(([model, depth]) => [model, loadOf(depth, stats?.get(model))]));
  }

  /** Every model's pace, cached and shared between concurrent requests; a failed read is not kept. */
  stats(): Promise<Map<string, ModelStats>> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.ttlMs) return this.cached.value;
    const signal = AbortSignal.timeout(this.ttlMs);
    const value = Promise.all(this.deps.models.map(async (model) => [model, await readModelStats(this.deps.store, model, signal)] as const)).then(
      (entries) => new Map(entries),
    );
    this.cached = { at: now, value };
    value.catch(() => {
      if (this.cached?.value === value) this.cached = undefined;
    });
    return value;
  }
}
