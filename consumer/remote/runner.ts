// A remote worker's runner: the same frames as a local runner (common/protocol.ts), one per
// binary WebSocket message, over a connection the worker opened to the gateway
// (consumer/remote/gateway.ts). Jobs are leased: each has a deadline that every frame from the worker
// renews. A closed connection or a missed deadline loses the worker's jobs as a shared,
// retryable crash: they run again elsewhere as the same attempt (consumer/job.ts), since a
// network or a machine we do not run is no proof against a job. The second time, the job runs
// alone (solo, as on a local runner): lost again alone, it spends an attempt, so a job that
// kills every worker it reaches fails after MAX_ATTEMPTS instead of going round for ever.
import type { WebSocket } from 'ws';
import { encodeFrame, FrameDecoder } from '../../common/frames.js';
import type { Logger } from '../../common/logger.js';
import { readRunnerFrame, type FromRunner, type ReadyFrame, type ToRunner } from '../../common/protocol.js';
import { InFlight } from '../inflight.js';
import type { PoolRunner } from '../pool.js';
import type { RunnerOutcome, RunRequest } from '../run.js';

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
  /** Each job is leased until lastFrame (or its hand-over, if later) + leaseMs. */
  private readonly leases: InFlight;
  private lastFrame = 0;
  private readonly decoder = new FrameDecoder();
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  constructor(
    private readonly socket: WebSocket,
    private readonly options: RemoteOptions,
  ) {
    this.worker = options.worker;
    this.leases = new InFlight({ open: () => !this.closed, onSettle: options.onOutcome });
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

  async run(request: RunRequest): Promise<RunnerOutcome> {
    await this.leases.enter(request);
    if (this.closed) {
      this.leases.leave(request);
      return lost('worker connection closed before the job was sent', true);
    }
    const outcome = this.leases.hold(request);
    this.send({ v: 1, type: 'job', id: request.id, priority: request.priority ?? 'normal', params: { ...request.params, preview_every: request.params.preview_every ?? 0 } }, request.image);
    return outcome;
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
    this.lastFrame = Date.now();
    if (message.type === 'compiled') {
      this.options.logger.info({ worker: this.worker, ok: message.ok, compile_seconds: message.seconds }, 'worker background compile ended');
      return;
    }
    if (message.type === 'pong') return;
    this.leases.deliver(message, payload);
  }

  private checkLeases(): void {
    const oldest = this.leases.oldestSince;
    if (oldest !== undefined && Math.max(oldest, this.lastFrame) + this.options.leaseMs < Date.now()) {
      this.options.logger.error({ worker: this.worker, lease_ms: this.options.leaseMs }, 'worker missed a lease; dropping it');
      this.close(4008, 'lease expired');
    }
  }

  private lose(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.leases.settleAll((id) => lost(reason, !this.leases.isSolo(id)));
    this.leases.wake();
    this.options.onClose();
  }
}

const lost = (message: string, shared: boolean): RunnerOutcome => ({ ok: false, code: 'runner_crashed', retryable: true, message, shared });
