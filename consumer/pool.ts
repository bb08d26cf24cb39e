// The runners of one model: local ones (one per GPU, consumer/runner.ts) and remote workers
// that connect to the gateway and leave again (consumer/remote/runner.ts). A job goes to the runner
// with the most room; a verified job asks for runners of distinct workers. Cancel reaches
// every runner that holds the job.
import type { RunnerOutcome, RunRequest } from './run.js';

/** What the pool needs of a runner, local or remote. */
export interface PoolRunner {
  /** Who computes: `local` for this machine's GPUs, a worker id for a remote worker. */
  readonly worker?: string;
  readonly pending: number;
  readonly capacity: number;
  readonly running: boolean;
  ensureStarted?(): Promise<unknown>;
  run(request: RunRequest): Promise<RunnerOutcome>;
  cancel(id: string): void;
  /** standby: an idle unload (a local runner may keep a standby process for its next start). */
  stop(graceMs: number, options?: { standby?: boolean }): Promise<void>;
}

export interface PickOptions {
  /** Workers that must not run it (they already ran this job). */
  exclude?: ReadonlySet<string>;
  /** Called once when no runner is eligible and the job starts to wait for one. */
  onWait?(): void;
}

export const workerOf = (runner: PoolRunner) => runner.worker ?? 'local';

export class RunnerPool {
  private readonly runners: PoolRunner[];
  private readonly owners = new Map<string, Set<PoolRunner>>();
  /**
   * Jobs picked for each runner and not yet ended. A runner's own count can lag (a local one
   * counts a job once it is admitted); this one grows at the pick, so a burst of jobs picked
   * before any starts still spreads over the runners.
   */
  private readonly load = new Map<PoolRunner, number>();
  private readonly changeListeners: (() => void)[] = [];
  private waiters: (() => void)[] = [];

  constructor(runners: PoolRunner[]) {
    this.runners = [...runners];
  }

  /** Jobs the pool can hold at once: one batch computing and one queued per runner. */
  get capacity(): number {
    return this.runners.reduce((sum, runner) => sum + runner.capacity, 0);
  }

  get running(): boolean {
    return this.runners.some((runner) => runner.running);
  }

  /** Distinct workers serving this model now. */
  get workers(): Set<string> {
    return new Set(this.runners.map(workerOf));
  }

  /** Called whenever runners join or leave (the capacity changed). */
  onChange(listener: () => void): void {
    this.changeListeners.push(listener);
  }

  add(runner: PoolRunner): void {
    this.runners.push(runner);
    this.changed();
  }

  remove(runner: PoolRunner): void {
    const index = this.runners.indexOf(runner);
    if (index >= 0) this.runners.splice(index, 1);
    this.load.delete(runner);
    this.changed();
  }

  /** Loads the model on every local GPU ahead of the first job. */
  async warm(): Promise<void> {
    await Promise.all(this.runners.map((runner) => runner.ensureStarted?.()));
  }

  /**
   * The eligible runner with the most room, at once if there is one, else once one joins. The
   * job counts against it from now on: hand it to runOn().
   */
  pick(options: PickOptions = {}): PoolRunner | Promise<PoolRunner> {
    const found = this.eligible(options.exclude);
    if (found) return this.reserve(found);
    options.onWait?.();
    return (async () => {
      for (;;) {
        await new Promise<void>((resolve) => this.waiters.push(resolve));
        const next = this.eligible(options.exclude);
        if (next) return this.reserve(next);
      }
    })();
  }

  async run(request: RunRequest, options?: PickOptions): Promise<RunnerOutcome> {
    const picked = this.pick(options);
    const runner = picked instanceof Promise ? await picked : picked;
    return this.runOn(runner, request);
  }

  /** Runs the job on a runner pick() gave; cancel() then reaches it there. */
  async runOn(runner: PoolRunner, request: RunRequest): Promise<RunnerOutcome> {
    const { id } = request;
    const owners = this.owners.get(id) ?? new Set();
    this.owners.set(id, owners.add(runner));
    try {
      return await runner.run(request);
    } finally {
      if (this.load.has(runner)) this.load.set(runner, this.load.get(runner)! - 1); // gone from the pool: nothing to count
      owners.delete(runner);
      if (!owners.size && this.owners.get(id) === owners) this.owners.delete(id);
    }
  }

  cancel(id: string): void {
    for (const runner of this.owners.get(id) ?? []) runner.cancel(id);
  }

  async stop(graceMs: number, options?: { standby?: boolean }): Promise<void> {
    await Promise.all(this.runners.map((runner) => runner.stop(graceMs, options)));
  }

  private reserve(runner: PoolRunner): PoolRunner {
    this.load.set(runner, (this.load.get(runner) ?? 0) + 1);
    return runner;
  }

  private room(runner: PoolRunner): number {
    return runner.capacity - Math.max(runner.pending, this.load.get(runner) ?? 0);
  }

  private eligible(exclude?: ReadonlySet<string>): PoolRunner | undefined {
    let best: PoolRunner | undefined;
    for (const runner of this.runners) {
      if (exclude?.has(workerOf(runner))) continue;
      if (!best || this.room(runner) > this.room(best)) best = runner;
    }
    return best;
  }

  private changed(): void {
    for (const wake of this.waiters.splice(0)) wake();
    for (const listener of this.changeListeners) listener();
  }
}
