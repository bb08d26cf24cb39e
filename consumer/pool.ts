// One runner per GPU for a model: a job goes to the runner with the fewest jobs in
// hand, so every GPU stays busy; cancel and stop reach the right one.
import type { JobCallbacks, Runner, RunnerOutcome, RunOptions } from './runner.js';
import type { JobParams } from '../common/jobs.js';

export class RunnerPool {
  private readonly owner = new Map<string, Runner>();

  constructor(private readonly runners: Runner[]) {
    if (!runners.length) throw new Error('a runner pool needs at least one runner');
  }

  /** Jobs the pool can hold at once: one batch computing and one queued per runner. */
  get capacity(): number {
    return this.runners.reduce((sum, runner) => sum + runner.capacity, 0);
  }

  get running(): boolean {
    return this.runners.some((runner) => runner.running);
  }

  /** Loads the model on every GPU ahead of the first job. */
  async warm(): Promise<void> {
    await Promise.all(this.runners.map((runner) => runner.ensureStarted()));
  }

  async run(id: string, params: JobParams, image: Uint8Array, callbacks?: JobCallbacks, options?: RunOptions): Promise<RunnerOutcome> {
    const runner = this.runners.reduce((best, next) => (next.pending < best.pending ? next : best));
    this.owner.set(id, runner);
    try {
      return await runner.run(id, params, image, callbacks, options);
    } finally {
      this.owner.delete(id);
    }
  }

  cancel(id: string): void {
    this.owner.get(id)?.cancel(id);
  }

  async stop(graceMs: number): Promise<void> {
    await Promise.all(this.runners.map((runner) => runner.stop(graceMs)));
  }
}
