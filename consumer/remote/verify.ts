// Verified results (docs/ARCHITECTURE.md, "Remote workers"): per the model's policy a job runs
// on one worker, or on two distinct workers whose outputs must agree (PSNR >= VERIFY_PSNR_DB).
// When they disagree a third distinct worker breaks the tie: the majority's result is kept and
// the outvoted worker gets a strike. A check that cannot find enough distinct workers waits
// for them rather than accept an unchecked result.
import type { Verification } from '../../common/jobs.js';
import type { Logger } from '../../common/logger.js';
import type { VerifyPolicy } from '../../common/models.js';
import { workerOf, type PoolRunner, type RunnerPool } from '../pool.js';
import type { RunnerOutcome, RunRequest } from '../run.js';
import { psnr } from './compare.js';

/** Where the verifier reports what it learnt of workers (the gateway keeps their ledger). */
export interface WorkerLedger {
  /** A worker's result was kept; `verified` when another worker agreed with it. */
  accepted(worker: string, job: string, verified: boolean): void;
  /** A worker was outvoted on a job. */
  strike(worker: string, job: string): Promise<void>;
  /** Whether the worker has been evicted (its results are no longer kept). */
  evicted(worker: string): boolean;
}

export type VerifiedOutcome = RunnerOutcome & { worker?: string; verification?: Verification };

export interface VerifyOptions {
  /** The job waits for distinct workers (called once per wait). */
  onWait?(): void;
}

export function describePolicy(policy: VerifyPolicy): string {
  return policy.kind === 'spot' ? `spot:${policy.fraction}` : policy.kind === 'all' ? 'all:2' : 'off';
}

export class Verifier {
  constructor(
    private readonly pool: RunnerPool,
    private readonly policy: VerifyPolicy,
    private readonly ledger: WorkerLedger | undefined,
    private readonly thresholdDb: number,
    private readonly logger: Logger,
    private readonly random: () => number = Math.random,
  ) {}

  async run(request: RunRequest, options: VerifyOptions = {}): Promise<VerifiedOutcome> {
    const policy = describePolicy(this.policy);
    const first = await this.pick(new Set(), options);
    if (!this.checks()) return this.single(first, request, options, policy);
    const second = await this.pick(new Set([workerOf(first)]), options);
    // Only the first run reports the job's start and progress.
    const runs = [first, second].map((runner, i) => this.pool.runOn(runner, i === 0 ? request : { ...request, callbacks: {} }));
    const [a, b] = await Promise.all(runs);
    if (!a!.ok) return a!;
    if (!b!.ok) return b!;
    const named = [{ runner: first, outcome: a! }, { runner: second, outcome: b! }];
    if ((await psnr(a!.image, b!.image)) >= this.thresholdDb) return this.keep(named[0]!, [first, second], [], policy);
    return this.tieBreak(request, named, options, policy);
  }

  /**
   * One unchecked run. A worker evicted while it ran (outvoted on another job) is a known liar:
   * its result is not kept, and the job runs on another worker.
   */
  private async single(first: PoolRunner, request: RunRequest, options: VerifyOptions, policy: string): Promise<VerifiedOutcome> {
    const { id } = request;
    const evicted = new Set<string>();
    for (let runner = first; ; runner = await this.pick(evicted, options)) {
      const outcome = await this.pool.runOn(runner, request);
      const worker = workerOf(runner);
      if (outcome.ok && this.ledger?.evicted(worker)) {
        this.logger.warn({ job: id, worker }, 'the worker was evicted while it ran this job: its result is dropped, the job runs elsewhere');
        evicted.add(worker);
        continue;
      }
      if (outcome.ok) this.ledger?.accepted(worker, id, false);
      return { ...outcome, worker, verification: { policy, state: 'single', workers: [worker], outvoted: [] } };
    }
  }

  /** Whether this job runs twice. */
  private checks(): boolean {
    if (this.policy.kind === 'all') return true;
    return this.policy.kind === 'spot' && this.random() < this.policy.fraction;
  }

  private pick(exclude: Set<string>, options: VerifyOptions): Promise<PoolRunner> {
    return Promise.resolve(this.pool.pick({ exclude, onWait: options.onWait }));
  }

  private async tieBreak(
    request: RunRequest,
    [a, b]: { runner: PoolRunner; outcome: Extract<RunnerOutcome, { ok: true }> }[],
    options: VerifyOptions,
    policy: string,
  ): Promise<VerifiedOutcome> {
    const [wa, wb] = [workerOf(a!.runner), workerOf(b!.runner)];
    this.logger.warn({ job: request.id, workers: [wa, wb] }, 'two workers disagree; asking a third');
    const third = await this.pick(new Set([wa, wb]), options);
    const c = await this.pool.runOn(third, { ...request, callbacks: {} });
    if (!c.ok) return c;
    const [withA, withB] = await Promise.all([psnr(c.image, a!.outcome.image), psnr(c.image, b!.outcome.image)]);
    const agreesA = withA >= this.thresholdDb;
    const agreesB = withB >= this.thresholdDb;
    const runners = [a!.runner, b!.runner, third];
    if (agreesA && !agreesB) return this.keep(a!, runners, [b!.runner], policy);
    if (agreesB && !agreesA) return this.keep(b!, runners, [a!.runner], policy);
    if (agreesA && agreesB) return this.keep({ runner: third, outcome: c }, runners, [], policy);
    return {
      ok: false,
      code: 'unverified',
      retryable: true,
      message: `no two of workers ${[wa, wb, workerOf(third)].join(', ')} agreed on the result`,
    };
  }

  private async keep(
    kept: { runner: PoolRunner; outcome: Extract<RunnerOutcome, { ok: true }> },
    runners: PoolRunner[],
    outvoted: PoolRunner[],
    policy: string,
  ): Promise<VerifiedOutcome> {
    const id = kept.outcome.result.id;
    for (const runner of runners) if (!outvoted.includes(runner)) this.ledger?.accepted(workerOf(runner), id, true);
    // Strikes are recorded before the result is: an evicted liar is gone before the job ends.
    await Promise.all(outvoted.map((runner) => this.ledger?.strike(workerOf(runner), id)));
    return {
      ...kept.outcome,
      worker: workerOf(kept.runner),
      verification: { policy, state: 'verified', workers: runners.map(workerOf), outvoted: outvoted.map(workerOf) },
    };
  }
}
