// Queued jobs followed on event streams: one poll a second per model, shared by every stream
// that follows one of its queued jobs (the Kafka offsets it reads are cached and shared too),
// telling each stream its job's standing whenever the position changed.
import type { JobRecord } from '../common/jobs.js';
import type { JobStanding } from '../common/view.js';
import type { QueueView } from './queue.js';

interface Watcher {
  record: JobRecord;
  send: (standing: JobStanding) => void;
  last: number | null;
  stopped: boolean;
}

export class StandingWatch {
  private readonly watchers = new Map<string, Set<Watcher>>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly busy = new Set<string>();

  constructor(
    private readonly queue: Pick<QueueView, 'standing'>,
    private readonly intervalMs = 1000,
  ) {}

  /**
   * Calls `send` with the queued job's standing each time its position differs from the last
   * one told (`last`: what the stream's snapshot said). The returned function stops it, at once:
   * no call comes after it.
   */
  watch(record: JobRecord, last: number | null, send: (standing: JobStanding) => void): () => void {
    const model = record.model_name;
    const watcher: Watcher = { record, send, last, stopped: false };
    let set = this.watchers.get(model);
    if (!set) this.watchers.set(model, (set = new Set()));
    set.add(watcher);
    if (!this.timers.has(model)) {
      const timer = setInterval(() => void this.poll(model), this.intervalMs);
      timer.unref();
      this.timers.set(model, timer);
    }
    return () => this.unwatch(model, watcher);
  }

  /** How many streams are followed (for tests). */
  get size(): number {
    return [...this.watchers.values()].reduce((sum, set) => sum + set.size, 0);
  }

  private unwatch(model: string, watcher: Watcher): void {
    watcher.stopped = true;
    const set = this.watchers.get(model);
    set?.delete(watcher);
    if (set?.size) return;
    this.watchers.delete(model);
    clearInterval(this.timers.get(model));
    this.timers.delete(model);
  }

  private async poll(model: string): Promise<void> {
    if (this.busy.has(model)) return; // the previous poll is still waiting for Kafka
    this.busy.add(model);
    try {
      const watchers = [...(this.watchers.get(model) ?? [])];
      await Promise.all(
        watchers.map(async (watcher) => {
          const standing = await this.queue.standing(watcher.record);
          if (watcher.stopped || standing.queue_position === null || standing.queue_position === watcher.last) return;
          watcher.last = standing.queue_position;
          watcher.send(standing);
        }),
      );
    } finally {
      this.busy.delete(model);
    }
  }
}
