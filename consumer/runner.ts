// One runner as the consumer sees it: jobs handed over and the outcome each one gets. A
// crash or a stall of the process (consumer/process.ts) never loses a job: every job in
// flight resolves with a retryable error and the next job starts a fresh process.
import type { FromRunner } from '../common/protocol.js';
import { InFlight } from './inflight.js';
import { RunnerProcess, type ProcessOptions, type ReadyInfo } from './process.js';
import type { RunnerOutcome, RunRequest } from './run.js';

export type { ReadyInfo } from './process.js';

export interface RunnerOptions extends ProcessOptions {
  onReady?(info: ReadyInfo): void;
  onRestart?(): void;
}

export class Runner {
  private readonly process: RunnerProcess;
  private readonly inFlight = new InFlight();

  constructor(private readonly options: RunnerOptions) {
    this.process = new RunnerProcess(options, {
      onMessage: (message, payload) => this.onMessage(message, payload),
      onExit: (reason, expected) => this.onExit(reason, expected),
      busy: () => this.inFlight.size > 0,
      largestPixels: () => this.inFlight.largestPixels,
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
  async run(request: RunRequest): Promise<RunnerOutcome> {
    await this.inFlight.enter(request);
    try {
      await this.process.ensureStarted();
    } catch (error) {
      this.inFlight.leave(request);
      return { ok: false, code: 'runner_start_failed', retryable: true, message: (error as Error).message };
    }
    const outcome = this.inFlight.hold(request);
    if (this.inFlight.size === 1) this.process.markBusy();
    this.process.send({ v: 1, type: 'job', id: request.id, priority: request.priority ?? 'normal', params: { ...request.params, preview_every: request.params.preview_every ?? 0 } }, request.image);
    return outcome;
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
    if (!this.inFlight.deliver(message, payload) && message.type === 'error') {
      this.options.logger.warn({ frame: message }, 'runner error without a job');
    }
  }

  private onExit(reason: string, expected: boolean): void {
    if (!expected) this.options.onRestart?.();
    const shared = this.inFlight.size > 1;
    this.inFlight.settleAll(() => ({ ok: false, code: 'runner_crashed', retryable: true, message: reason, shared }));
  }
}
