// Each remote worker's ledger: its connections, jobs, failures, strikes and the results it
// returned unchecked. It records strikes and evicts, writes the worker's status for operators,
// keeps its metrics, and drops its connections within seconds of its token being refused
// (revoked here, or the worker evicted by another consumer).
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../common/logger.js';
import type { WorkerStatus, WorkerStore, WorkerToken } from '../../common/workers.js';
import type { RunnerOutcome } from '../run.js';
import type { RemoteRunner } from './runner.js';
import type { WorkerLedger } from './verify.js';

/** Results of a worker kept without a second opinion, remembered for an operator if it is evicted. */
const UNVERIFIED_KEPT = 100;

export interface LedgerOptions {
  workers: WorkerStore;
  maxStrikes: number;
  logger: Logger;
  registry?: Registry;
}

interface Ledger {
  token: WorkerToken;
  connections: Set<RemoteRunner>;
  connectedSince: string | null;
  jobsDone: number;
  failures: number;
  strikes: number;
  unverified: string[];
  evicted: boolean;
  /** Counters changed since the status was last written. */
  dirty: boolean;
}

export class WorkerLedgers implements WorkerLedger {
  private readonly ledgers = new Map<string, Ledger>();
  private readonly metrics;

  constructor(private readonly options: LedgerOptions) {
    const registers = options.registry ? [options.registry] : [];
    this.metrics = {
      connected: new Gauge({ name: 'img2img_worker_connected', help: 'Connections of a remote worker', labelNames: ['worker'], registers }),
      jobs: new Counter({ name: 'img2img_worker_jobs_total', help: 'Job runs on a remote worker, by outcome', labelNames: ['worker', 'outcome'], registers }),
      strikes: new Counter({ name: 'img2img_worker_strikes_total', help: 'Results of a worker outvoted by others', labelNames: ['worker'], registers }),
    };
  }

  accepted(worker: string, job: string, verified: boolean): void {
    const ledger = this.ledgers.get(worker);
    if (!ledger || verified) return;
    ledger.unverified.push(job);
    if (ledger.unverified.length > UNVERIFIED_KEPT) ledger.unverified.shift();
  }

  evicted(worker: string): boolean {
    return this.ledgers.get(worker)?.evicted ?? false;
  }

  async strike(worker: string, job: string): Promise<void> {
    const ledger = this.ledgers.get(worker);
    if (!ledger) {
      this.options.logger.error({ worker, job }, 'a worker without a token (this consumer\'s own GPU) was outvoted');
      return;
    }
    this.metrics.strikes.inc({ worker });
    const token = await this.options.workers.strike(worker, job, this.options.maxStrikes, () => {
      // The list is taken now: from here on the worker counts as evicted here, so no unchecked
      // result of it is kept while the eviction is being written (Verifier drops them).
      ledger.evicted = true;
      return [...ledger.unverified];
    });
    ledger.strikes = token?.strikes.length ?? ledger.strikes + 1;
    this.options.logger.warn({ worker, job, strikes: ledger.strikes }, 'worker outvoted: strike');
    if (token?.evicted) this.evict(ledger, token);
    await this.writeStatus(ledger);
  }

  connected(token: WorkerToken, runner: RemoteRunner): void {
    const ledger = this.ledger(token);
    ledger.connections.add(runner);
    ledger.connectedSince ??= new Date().toISOString();
    this.metrics.connected.set({ worker: token.id }, ledger.connections.size);
    void this.writeStatus(ledger);
  }

  disconnected(token: WorkerToken, runner: RemoteRunner): void {
    const ledger = this.ledger(token);
    ledger.connections.delete(runner);
    this.metrics.connected.set({ worker: token.id }, ledger.connections.size);
    if (!ledger.connections.size) ledger.connectedSince = null;
    void this.writeStatus(ledger);
  }

  /** A job ended on the worker. */
  count(token: WorkerToken, outcome: RunnerOutcome): void {
    const ledger = this.ledger(token);
    this.metrics.jobs.inc({ worker: token.id, outcome: outcome.ok ? 'succeeded' : outcome.code });
    ledger.dirty = true;
    if (outcome.ok) ledger.jobsDone++;
    else if (outcome.code !== 'canceled') ledger.failures++;
  }

  /** Writes changed statuses, and drops connections whose token is refused now. */
  async check(): Promise<void> {
    for (const ledger of this.ledgers.values()) {
      if (ledger.dirty) {
        ledger.dirty = false;
        void this.writeStatus(ledger);
      }
      if (!ledger.connections.size) continue;
      const allowed = await this.options.workers.stillAllowed(ledger.token.id).catch(() => true); // storage down: keep serving
      if (allowed) continue;
      this.options.logger.warn({ worker: ledger.token.id }, 'worker token revoked or evicted: dropping its connection');
      for (const runner of ledger.connections) runner.close(4003, 'token refused');
    }
  }

  closeAll(code: number, reason: string): void {
    for (const ledger of this.ledgers.values()) for (const runner of ledger.connections) runner.close(code, reason);
  }

  private evict(ledger: Ledger, token: WorkerToken): void {
    if (ledger.token.evicted) return; // a racing strike evicted it already
    ledger.evicted = true;
    ledger.token = token;
    this.options.logger.error({ worker: token.id, name: token.name, unverified_jobs: token.evicted?.unverified_jobs }, 'worker evicted: its token is refused from now on');
    for (const runner of ledger.connections) runner.close(4003, 'evicted');
  }

  private ledger(token: WorkerToken): Ledger {
    let ledger = this.ledgers.get(token.id);
    if (!ledger) {
      ledger = { token, connections: new Set(), connectedSince: null, jobsDone: 0, failures: 0, strikes: token.strikes.length, unverified: [], evicted: false, dirty: false };
      this.ledgers.set(token.id, ledger);
    }
    return ledger;
  }

  private async writeStatus(ledger: Ledger): Promise<void> {
    const runners = [...ledger.connections];
    const status: WorkerStatus = {
      v: 1,
      id: ledger.token.id,
      name: ledger.token.name,
      state: ledger.evicted ? 'evicted' : runners.length ? 'connected' : 'disconnected',
      connected_since: ledger.connectedSince,
      models: [...new Set(runners.map((r) => r.ready.model))],
      capacity: runners.reduce((sum, r) => sum + r.capacity, 0),
      device: runners[0]?.ready.device ?? null,
      jobs_done: ledger.jobsDone,
      failures: ledger.failures,
      strikes: ledger.strikes,
      updated_at: new Date().toISOString(),
    };
    await this.options.workers.writeStatus(status).catch((error: unknown) => this.options.logger.warn({ err: error }, 'worker status not written'));
  }
}
