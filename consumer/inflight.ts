// The jobs one runner holds, local or remote, and its solo gate: a solo job (the suspect of a
// crash) waits for an empty runner, and nothing joins a runner while a solo job runs or
// waits. Each held job ends with exactly one outcome.
import type { FromRunner } from '../common/protocol.js';
import type { JobCallbacks, RunnerOutcome, RunRequest } from './run.js';

interface Held {
  callbacks: JobCallbacks;
  resolve(outcome: RunnerOutcome): void;
  pixels: number;
  /** When the job was handed over (ms since the epoch). */
  since: number;
}

export interface InFlightOptions {
  /** False once the runner is gone for good: the gate opens so that waiters can learn it. */
  open?(): boolean;
  /** Called with each outcome just before its job's promise resolves. */
  onSettle?(id: string, outcome: RunnerOutcome): void;
}

export class InFlight {
  private readonly jobs = new Map<string, Held>();
  private readonly soloJobs = new Set<string>();
  private soloWaiting = 0;
  /** Jobs past the gate and not yet left (held, or about to be). */
  private entered = 0;
  private readonly waiters: (() => void)[] = [];

  constructor(private readonly options: InFlightOptions = {}) {}

  get size(): number {
    return this.jobs.size;
  }

  has(id: string): boolean {
    return this.jobs.has(id);
  }

  /** Whether the job entered alone. */
  isSolo(id: string): boolean {
    return this.soloJobs.has(id);
  }

  /** The largest input among the held jobs (the stall bound grows with it). */
  get largestPixels(): number {
    return Math.max(0, ...[...this.jobs.values()].map((job) => job.pixels));
  }

  /** When the longest-held job was handed over; undefined when none is held. */
  get oldestSince(): number | undefined {
    return this.jobs.size ? Math.min(...[...this.jobs.values()].map((job) => job.since)) : undefined;
  }

  /**
   * Waits until the request may enter. Leaving the wait and taking the place happen in one
   * synchronous step, so two jobs woken together cannot both think the runner is theirs. Every
   * enter() is followed by one leave().
   */
  async enter(request: RunRequest): Promise<void> {
    const solo = Boolean(request.solo);
    if (solo) this.soloWaiting++;
    while (this.blocked(solo)) await new Promise<void>((resolve) => this.waiters.push(resolve));
    this.entered++;
    if (solo) {
      this.soloWaiting--;
      this.soloJobs.add(request.id);
    }
  }

  leave(request: RunRequest): void {
    this.entered--;
    if (request.solo) this.soloJobs.delete(request.id);
    this.wake();
  }

  /** Holds an entered job until its outcome; the job leaves the gate then. */
  hold(request: RunRequest): Promise<RunnerOutcome> {
    const outcome = new Promise<RunnerOutcome>((resolve) => {
      this.jobs.set(request.id, { callbacks: request.callbacks ?? {}, resolve, pixels: request.pixels ?? 0, since: Date.now() });
    });
    return outcome.finally(() => this.leave(request));
  }

  /** A frame about one job: its callbacks or its outcome. False when no such job is held. */
  deliver(message: Extract<FromRunner, { type: 'started' | 'progress' | 'preview' | 'result' | 'error' }>, payload: Buffer): boolean {
    const job = message.id === null ? undefined : this.jobs.get(message.id);
    if (!job) return false;
    switch (message.type) {
      case 'started':
        job.callbacks.onStarted?.(message.batch_size);
        break;
      case 'progress':
        job.callbacks.onProgress?.(message.step, message.total);
        break;
      case 'preview':
        job.callbacks.onPreview?.(message.step, message.total, payload);
        break;
      case 'result':
        this.settle(message.id!, { ok: true, image: payload, result: message });
        break;
      case 'error':
        this.settle(message.id!, { ok: false, code: message.code, retryable: message.retryable, message: message.message });
        break;
    }
    return true;
  }

  /** Ends every held job, each with the outcome outcomeOf gives it. */
  settleAll(outcomeOf: (id: string) => RunnerOutcome): void {
    for (const id of [...this.jobs.keys()]) this.settle(id, outcomeOf(id));
  }

  /** Lets every waiter look at the gate again (the runner closed). */
  wake(): void {
    for (const wake of this.waiters.splice(0)) wake();
  }

  private settle(id: string, outcome: RunnerOutcome): void {
    const job = this.jobs.get(id);
    if (!job) return;
    this.jobs.delete(id);
    this.options.onSettle?.(id, outcome);
    job.resolve(outcome);
  }

  private blocked(solo: boolean): boolean {
    if (this.options.open && !this.options.open()) return false;
    return this.soloJobs.size > 0 || (solo ? this.entered > 0 : this.soloWaiting > 0);
  }
}
