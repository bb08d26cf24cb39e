// A remote worker's runner: the same frames as a local runner (common/protocol.ts), one per
// binary WebSocket message, over a connection the worker opened to the gateway
// (consumer/gateway.ts). Jobs are leased: each has a deadline that every frame from the worker
// renews. A closed connection or a missed deadline loses the worker's jobs as a shared,
// retryable crash: they run again elsewhere as the same attempt (consumer/job.ts), since a
// network or a machine we do not run is no proof against a job. The second time, the job runs
// alone (solo, as on a local runner): lost again alone, it spends an attempt, so a job that
// kills every worker it reaches fails after MAX_ATTEMPTS instead of going round for ever.
import type { WebSocket } from 'ws';
import { encodeFrame, FrameDecoder } from '../common/frames.js';
import type { JobParams } from '../common/jobs.js';
import type { Logger } from '../common/logger.js';
import { readRunnerFrame, type FromRunner, type ReadyFrame, type ToRunner } from '../common/protocol.js';
import type { PoolRunner } from './pool.js';
import { deliverJobFrame, type JobCallbacks, type RunnerOutcome, type RunOptions } from './runner.js';

interface Lease {
  callbacks: JobCallbacks;
  resolve(outcome: RunnerOutcome): void;
  deadline: number;
}

export interface RemoteOptions {
  worker: string;
  ready: ReadyFrame;
  /** A job with no frame from its worker for this long is lost, and the connection dropped. */
  leaseMs: number;
  logger: Logger;
  /** The connection is gone; its jobs were already resolved. */
  onClose(): void;
  /** A job ended on this worker (for its counters). */
  onOutcome?(id: string, outcome: RunnerOutcome): void;
}

export class RemoteRunner implements PoolRunner {
  readonly worker: string;
  private readonly leases = new Map<string, Lease>();
  private readonly decoder = new FrameDecoder();
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** Jobs running alone; while one runs, or one waits for the runner to empty, nothing joins. */
  private readonly soloJobs = new Set<string>();
  private soloWaiting = 0;
  private readonly gateWaiters: (() => void)[] = [];

  constructor(
    private readonly socket: WebSocket,
    private readonly options: RemoteOptions,
  ) {
    this.worker = options.worker;
    socket.on('message', (data: Buffer, isBinary: boolean) => this.receive(data, isBinary));
    socket.on('close', (code, reason) => this.lose(`worker connection closed (${code} ${reason.toString() || 'no reason'})`));
    socket.on('error', (error) => options.logger.warn({ err: error, worker: this.worker }, 'worker connection error'));
    this.timer = setInterval(() => this.checkLeases(), Math.max(100, Math.min(1000, options.leaseMs / 4))).unref();
  }

  get pending(): number {
    return this.leases.size;
  }

  /** One batch computing and one queued behind it, as the worker's ready frame sized it. */
  get capacity(): number {
    return this.closed ? 0 : 2 * this.options.ready.max_batch;
  }

  get running(): boolean {
    return !this.closed;
  }

  get ready(): ReadyFrame {
    return this.options.ready;
  }

  async run(id: string, params: JobParams, image: Uint8Array, callbacks: JobCallbacks = {}, options: RunOptions = {}): Promise<RunnerOutcome> {
    // A solo job waits for an empty runner, and nothing joins a solo one (as consumer/runner.ts
    // does). Leaving the wait and taking the lease happen in one synchronous step, so two jobs
    // woken together cannot both think the runner is theirs.
    const solo = Boolean(options.solo);
    if (solo) this.soloWaiting++;
    while (this.blocked(solo)) await new Promise<void>((resolve) => this.gateWaiters.push(resolve));
    if (solo) {
      this.soloWaiting--;
      this.soloJobs.add(id);
    }
    if (this.closed) {
      this.release(solo, id);
      return lost('worker connection closed before the job was sent', true);
    }
    const outcome = new Promise<RunnerOutcome>((resolve) => {
      this.leases.set(id, { callbacks, resolve, deadline: Date.now() + this.options.leaseMs });
    });
    this.send({ v: 1, type: 'job', id, priority: options.priority ?? 'normal', params }, image);
    return outcome.finally(() => this.release(solo, id));
  }

  private blocked(solo: boolean): boolean {
    return !this.closed && (this.soloJobs.size > 0 || (solo ? this.leases.size > 0 : this.soloWaiting > 0));
  }

  private release(solo: boolean, id: string): void {
    if (solo) this.soloJobs.delete(id);
    for (const wake of this.gateWaiters.splice(0)) wake();
  }

  cancel(id: string): void {
    if (this.leases.has(id)) this.send({ v: 1, type: 'cancel', id });
  }

  /** The gateway closes connections when the consumer stops; idle unloading leaves a worker's model loaded. */
  async stop(): Promise<void> {}

  /** Drops the connection (eviction, revocation, a missed lease, shutdown); its jobs are lost. */
  close(code: number, reason: string): void {
    this.lose(reason);
    this.socket.close(code, reason);
    // A worker that does not answer the close handshake is cut off.
    setTimeout(() => this.socket.terminate(), 2000).unref();
  }

  private send(message: ToRunner, payload?: Uint8Array): void {
    this.socket.send(encodeFrame(message, payload), { binary: true });
  }

  private receive(data: Buffer, isBinary: boolean): void {
    if (!isBinary) return;
    try {
      for (const frame of this.decoder.push(data)) {
        const read = readRunnerFrame(frame);
        if (read && read.message.type !== 'ready') this.onMessage(read.message, read.payload);
      }
    } catch (error) {
      this.options.logger.error({ err: error, worker: this.worker }, 'worker broke the frame protocol; dropping it');
      this.close(1002, 'protocol error');
    }
  }

  private onMessage(message: Exclude<FromRunner, { type: 'ready' }>, payload: Buffer): void {
    // Any frame shows the worker alive and working: it renews every lease it holds.
    const deadline = Date.now() + this.options.leaseMs;
    for (const lease of this.leases.values()) lease.deadline = deadline;
    if (message.type === 'compiled') {
      this.options.logger.info({ worker: this.worker, ok: message.ok, compile_seconds: message.seconds }, 'worker background compile ended');
      return;
    }
    if (message.type === 'pong') return;
    const lease = message.id === null ? undefined : this.leases.get(message.id);
    if (!lease) return;
    deliverJobFrame(message, payload, lease.callbacks, (outcome) => this.settle(message.id!, outcome));
  }

  private settle(id: string, outcome: RunnerOutcome): void {
    const lease = this.leases.get(id);
    if (!lease) return;
    this.leases.delete(id);
    this.options.onOutcome?.(id, outcome);
    lease.resolve(outcome);
  }

  private checkLeases(): void {
    const now = Date.now();
    if ([...this.leases.values()].some((lease) => lease.deadline < now)) {
      this.options.logger.error({ worker: this.worker, lease_ms: this.options.leaseMs }, 'worker missed a lease; dropping it');
      this.close(4008, 'lease expired');
    }
  }

  private lose(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const id of [...this.leases.keys()]) this.settle(id, lost(reason, !this.soloJobs.has(id)));
    for (const wake of this.gateWaiters.splice(0)) wake();
    this.options.onClose();
  }
}

const lost = (message: string, shared: boolean): RunnerOutcome => ({ ok: false, code: 'runner_crashed', retryable: true, message, shared });
