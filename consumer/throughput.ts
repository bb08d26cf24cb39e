// One model's measured pace in this consumer: jobs ended per second of work and the mean run
// time, over the last minute in which it had jobs, written to its stats record
// (common/stats.ts) at most every few seconds while that changes, and every
// STATS_HEARTBEAT_MS anyway so the API knows the consumer is alive. The rate divides by the time
// a job was in hand, idle time left out: a consumer idle for half a minute is not half as fast.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../common/logger.js';
import { statsKey, STATS_HEARTBEAT_MS, writeConsumerStats, type ConsumerStats } from '../common/stats.js';
import type { ObjectStore } from '../common/storage.js';

/** A second with work: how long of it a job was in hand, jobs ended in it, and the run seconds of those that succeeded. */
interface Second {
  busyMs: number;
  ended: number;
  runSeconds: number;
  succeeded: number;
}
const idleSecond = (): Second => ({ busyMs: 0, ended: 0, runSeconds: 0, succeeded: 0 });

/** What one consumer process is called in its stats records: unique per process, readable in a listing. */
export const consumerName = () => `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;

export interface ThroughputOptions {
  store: ObjectStore;
  model: string;
  consumer: string;
  logger: Logger;
  /** Seconds of work measured. */
  windowSeconds?: number;
  /** Least time between two writes. */
  writeEveryMs?: number;
}

export class Throughput {
  private readonly seconds: Second[] = [];
  private current = idleSecond();
  /** Jobs handed to a runner and not back yet; of those, the ones the runner started. */
  private held = 0;
  private running = 0;
  /** Since when the jobs in hand are counted into the current second's busy time. */
  private busySince = 0;
  private timer: NodeJS.Timeout | undefined;
  private lastWrite = 0;
  private written = '';
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly options: ThroughputOptions) {}

  start(): void {
    this.timer = setInterval(() => this.tick(), 1000);
    this.timer.unref();
  }

  /** A job was handed to a runner. */
  began(): void {
    if (this.held === 0) this.busySince = Date.now();
    this.held += 1;
  }

  /** The runner started a job handed to it. */
  started(): void {
    this.running += 1;
  }

  /** A job handed over came back: ended (its run seconds when it succeeded), or to be tried again; `started` if the runner had started it. */
  returned(ending: { ended: boolean; runSeconds?: number; started?: boolean }): void {
    this.held = Math.max(0, this.held - 1);
    if (ending.started) this.running = Math.max(0, this.running - 1);
    if (this.held === 0) this.current.busyMs += Date.now() - this.busySince;
    if (!ending.ended) return;
    this.current.ended += 1;
    if (ending.runSeconds !== undefined) {
      this.current.runSeconds += ending.runSeconds;
      this.current.succeeded += 1;
    }
  }

  /** The record as it stands. */
  snapshot(now = new Date()): ConsumerStats {
    const inHand = this.held > 0 ? now.getTime() - this.busySince : 0;
    const window = [...this.seconds, { ...this.current, busyMs: this.current.busyMs + inHand }];
    const busySeconds = window.reduce((sum, s) => sum + s.busyMs, 0) / 1000;
    const ended = window.reduce((sum, s) => sum + s.ended, 0);
    const succeeded = window.reduce((sum, s) => sum + s.succeeded, 0);
    const runSeconds = window.reduce((sum, s) => sum + s.runSeconds, 0);
    return {
      v: 1,
      model: this.options.model,
      consumer: this.options.consumer,
      updated_at: now.toISOString(),
      running: this.running,
      jobs_per_second: ended && busySeconds > 0 ? ended / busySeconds : null,
      mean_run_s: succeeded ? runSeconds / succeeded : null,
      ended,
    };
  }

  /** Stops writing and removes the record: a stopped consumer adds nothing to the model's pace. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.writing;
    const { store, model, consumer } = this.options;
    await store.delete(statsKey(model, consumer), AbortSignal.timeout(5000)).catch(() => {});
  }

  private tick(): void {
    const now = Date.now();
    if (this.held > 0) {
      this.current.busyMs += now - this.busySince;
      this.busySince = now;
    }
    if (this.current.busyMs > 0 || this.current.ended) {
      this.seconds.push(this.current);
      if (this.seconds.length > (this.options.windowSeconds ?? 60)) this.seconds.shift();
    }
    this.current = idleSecond();
    this.maybeWrite();
  }

  private maybeWrite(): void {
    const now = Date.now();
    const stats = this.snapshot();
    const { updated_at: _, ...content } = stats;
    const changed = JSON.stringify(content) !== this.written;
    const due = now - this.lastWrite >= (changed ? (this.options.writeEveryMs ?? 2000) : STATS_HEARTBEAT_MS);
    if (!due) return;
    this.lastWrite = now;
    this.written = JSON.stringify(content);
    this.writing = writeConsumerStats(this.options.store, stats, AbortSignal.timeout(5000)).catch((error: unknown) => {
      this.written = ''; // written again at the next tick that may
      this.options.logger.warn({ err: error, model: this.options.model }, 'could not write the stats record');
    });
  }
}
