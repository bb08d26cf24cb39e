// One runner as the consumer sees it: jobs handed over and the outcome each one gets. A
// crash or a stall of the process (consumer/process.ts) never loses a job: every job in
// flight resolves with a retryable error and the next job starts a fresh process.
import type { JobParams } from '../common/jobs.js';
import type { Priority } from '../common/topics.js';
import type { FromRunner, ResultFrame } from '../common/protocol.js';
import { RunnerProcess, type ProcessOptions, type ReadyInfo } from './process.js';

export type { ReadyInfo } from './process.js';

export interface RunnerOptions extends ProcessOptions {
  onReady?(info: ReadyInfo): void;
  onRestart?(): void;
}

export interface JobCallbacks {
  onStarted?(batchSize: number): void;
  onProgress?(step: number, total: number): void;
}

export type RunnerOutcome =
  | { ok: true; image: Buffer; result: ResultFrame }
  | {
      ok: false;
      code: string;
      retryable: boolean;
      message: string;
      /** The runner died or hung while it held other jobs too: this one may not be the cause. */
      shared?: boolean;
    };

export interface RunOptions {
  /** Run with no other job in the runner, and let none join until it ends: a suspect of a crash. */
  solo?: boolean;
  /** The job's priority: the runner starts higher ones first, and lets them overtake a running batch. */
  priority?: Priority;
  /** The input's pixels: the stall bound grows with them. */
  pixels?: number;
}

interface InFlight {
  callbacks: JobCallbacks;
  resolve(outcome: RunnerOutcome): void;
  pixels: number;
}

/** A frame about one job (the runner's or a remote worker's): what it means for the job's callbacks or its one outcome. */
export function deliverJobFrame(
  message: Extract<FromRunner, { type: 'started' | 'progress' | 'result' | 'error' }>,
  payload: Buffer,
  callbacks: JobCallbacks,
  settle: (outcome: RunnerOutcome) => void,
): void {
  switch (message.type) {
    case 'started':
      return callbacks.onStarted?.(message.batch_size);
    case 'progress':
      return callbacks.onProgress?.(message.step, message.total);
    case 'result':
      return settle({ ok: true, image: payload, result: message });
    case 'error':
      return settle({ ok: false, code: message.code, retryable: message.retryable, message: message.message });
  }
}

export class Runner {
  private readonly process: RunnerProcess;
  private readonly inFlight = new Map<string, InFlight>();
  /** A solo job is running, or this many wait for the runner to empty. */
  private soloRunning = false;
  private soloWaiting = 0;
  private readonly gateWaiters: (() => void)[] = [];

  constructor(private readonly options: RunnerOptions) {
    this.process = new RunnerProcess(options, {
      onMessage: (message, payload) => this.onMessage(message, payload),
      onExit: (reason, expected) => this.onExit(reason, expected),
      busy: () => this.inFlight.size > 0,
      largestPixels: () => Math.max(0, ...[...this.inFlight.values()].map((job) => job.pixels)),
      onReady: options.onReady,
    });
  }

  get pending(): number {
    return this.inFlight.size;
  }

  get running(): boolean {
    return this.process.state !== 'stopped';
  }

  get info(): ReadyInfo | undefined {
    return this.process.info;
  }

  /** Jobs worth handing over at once: one batch computing and one queued behind it. */
  get capacity(): number {
    return 2 * (this.process.info?.max_batch ?? 1);
  }

  ensureStarted(): Promise<ReadyInfo> {
    return this.process.ensureStarted();
  }

  /** Sends a job at once (the runner queues and batches it); resolves with its outcome. */
  async run(id: string, params: JobParams, image: Uint8Array, callbacks: JobCallbacks = {}, options: RunOptions = {}): Promise<RunnerOutcome> {
    await this.admit(Boolean(options.solo));
    try {
      await this.process.ensureStarted();
    } catch (error) {
      this.release(Boolean(options.solo));
      return { ok: false, code: 'runner_start_failed', retryable: true, message: (error as Error).message };
    }
    const outcome = new Promise<RunnerOutcome>((resolve) => this.inFlight.set(id, { callbacks, resolve, pixels: options.pixels ?? 0 }));
    if (this.inFlight.size === 1) this.process.markBusy();
    this.process.send({ v: 1, type: 'job', id, priority: options.priority ?? 'normal', params }, image);
    return outcome.finally(() => this.release(Boolean(options.solo)));
  }

  /** Waits until the job may enter: a solo job needs an empty runner; nothing joins a solo one. */
  private async admit(solo: boolean): Promise<void> {
    if (solo) this.soloWaiting++;
    const blocked = () => this.soloRunning || (solo ? this.inFlight.size > 0 : this.soloWaiting > 0);
    while (blocked()) await new Promise<void>((resolve) => this.gateWaiters.push(resolve));
    if (solo) {
      this.soloWaiting--;
      this.soloRunning = true;
    }
  }

  private release(solo: boolean): void {
    if (solo) this.soloRunning = false;
    for (const wake of this.gateWaiters.splice(0)) wake();
  }

  cancel(id: string): void {
    if (this.inFlight.has(id)) this.process.send({ v: 1, type: 'cancel', id });
  }

  /** Asks the runner to finish its work and exit; kills it after graceMs. */
  stop(graceMs: number, options?: { standby?: boolean }): Promise<void> {
    return this.process.stop(graceMs, options);
  }

  private onMessage(message: Exclude<FromRunner, { type: 'ready' | 'compiled' }>, payload: Buffer): void {
    if (message.type === 'pong') return;
    const job = message.id === null ? undefined : this.inFlight.get(message.id);
    if (!job) {
      if (message.type === 'error') this.options.logger.warn({ frame: message }, 'runner error without a job');
      return;
    }
    deliverJobFrame(message, payload, job.callbacks, (outcome) => this.settle(message.id!, outcome));
  }

  private settle(id: string, outcome: RunnerOutcome): void {
    const job = this.inFlight.get(id);
    if (!job) return;
    this.inFlight.delete(id);
    job.resolve(outcome);
  }

  private onExit(reason: string, expected: boolean): void {
    if (!expected) this.options.onRestart?.();
    const shared = this.inFlight.size > 1;
    for (const id of [...this.inFlight.keys()]) {
      this.settle(id, { ok: false, code: 'runner_crashed', retryable: true, message: reason, shared });
    }
  }
}
