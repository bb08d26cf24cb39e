// The worker gateway: remote GPU workers dial in over a WebSocket (GET /api/workers/connect,
// Authorization: Bearer <worker token>), send their ready frame, and become one more runner in
// the pool of the model they serve (consumer/remote.ts). It lives in the consumer process,
// because that is where a model's pool, its Kafka offsets and its job runs already are: a
// remote job is committed exactly like a local one. It also keeps each worker's ledger (jobs,
// failures, unverified results), records strikes and evicts, and drops a connection within
// seconds of its token being revoked.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Counter, Gauge, type Registry } from 'prom-client';
import { WebSocketServer, type WebSocket } from 'ws';
import { FrameDecoder } from '../common/frames.js';
import type { Logger } from '../common/logger.js';
import { readRunnerFrame, type ReadyFrame } from '../common/protocol.js';
import type { WorkerStatus, WorkerStore, WorkerToken } from '../common/workers.js';
import type { RunnerPool } from './pool.js';
import { RemoteRunner } from './remote.js';
import type { RunnerOutcome } from './runner.js';
import type { WorkerLedger } from './verify.js';

export const CONNECT_PATH = '/api/workers/connect';
/** A connected worker must send its ready frame within this long. */
const READY_TIMEOUT_MS = 30_000;
/** How often tokens of live connections are checked again (each read is cached 2 s: a revocation bites within ~3 s). */
const CHECK_INTERVAL_MS = 1000;
/** Results of a worker kept without a second opinion, remembered for an operator if it is evicted. */
const UNVERIFIED_KEPT = 100;

export interface GatewayOptions {
  host: string;
  port: number;
  workers: WorkerStore;
  /** The pool of each model this consumer serves. */
  pools: Map<string, RunnerPool>;
  leaseMs: number;
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

export class Gateway implements WorkerLedger {
  private readonly server: Server;
  private readonly sockets = new WebSocketServer({ noServer: true, maxPayload: 300 * 1024 * 1024 });
  private readonly ledgers = new Map<string, Ledger>();
  private readonly metrics;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: GatewayOptions) {
    this.server = createServer((_request, response) => response.writeHead(426, { Connection: 'close' }).end('a WebSocket endpoint\n'));
    this.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => void this.upgrade(request, socket, head));
    const registers = options.registry ? [options.registry] : [];
    this.metrics = {
      connected: new Gauge({ name: 'img2img_worker_connected', help: 'Connections of a remote worker', labelNames: ['worker'], registers }),
      jobs: new Counter({ name: 'img2img_worker_jobs_total', help: 'Job runs on a remote worker, by outcome', labelNames: ['worker', 'outcome'], registers }),
      strikes: new Counter({ name: 'img2img_worker_strikes_total', help: 'Results of a worker outvoted by others', labelNames: ['worker'], registers }),
    };
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(this.options.port, this.options.host, resolve));
    this.timer = setInterval(() => void this.check(), CHECK_INTERVAL_MS).unref();
  }

  /** ws://host:port/api/workers/connect once started. */
  url(): string {
    const address = this.server.address() as AddressInfo;
    return `ws://${this.options.host}:${address.port}${CONNECT_PATH}`;
  }

  /** Closes every worker connection (they reconnect to another consumer, or to this one when it is back). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const ledger of this.ledgers.values()) for (const runner of ledger.connections) runner.close(1001, 'consumer stopping');
    this.sockets.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
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

  private evict(ledger: Ledger, token: WorkerToken): void {
    if (ledger.token.evicted) return; // a racing strike evicted it already
    ledger.evicted = true;
    ledger.token = token;
    this.options.logger.error({ worker: token.id, name: token.name, unverified_jobs: token.evicted?.unverified_jobs }, 'worker evicted: its token is refused from now on');
    for (const runner of ledger.connections) runner.close(4003, 'evicted');
  }

  private async upgrade(request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    if (new URL(request.url ?? '/', 'http://gateway').pathname !== CONNECT_PATH) return refuse(socket, 404, 'Not Found');
    const bearer = /^Bearer (\S+)$/.exec(request.headers.authorization ?? '')?.[1];
    let token: WorkerToken | undefined;
    try {
      token = bearer ? await this.options.workers.verify(bearer) : undefined;
    } catch (error) {
      this.options.logger.warn({ err: error }, 'cannot check a worker token');
      return refuse(socket, 503, 'Service Unavailable');
    }
    if (!token) return refuse(socket, 401, 'Unauthorized');
    const worker = token;
    this.sockets.handleUpgrade(request, socket, head, (ws) => this.awaitReady(ws, worker));
  }

  private awaitReady(ws: WebSocket, token: WorkerToken): void {
    const timer = setTimeout(() => ws.close(4000, 'no ready frame'), READY_TIMEOUT_MS).unref();
    ws.once('message', (data: Buffer, isBinary: boolean) => {
      clearTimeout(timer);
      let ready: ReadyFrame | undefined;
      try {
        const frame = isBinary ? new FrameDecoder().push(data)[0] : undefined;
        const read = frame && readRunnerFrame(frame);
        if (read?.message.type === 'ready') ready = read.message;
      } catch {
        // a malformed first frame: refused below
      }
      if (!ready) return ws.close(1002, 'expected a ready frame');
      const pool = this.options.pools.get(ready.model);
      if (!pool) return ws.close(4004, `model ${ready.model} is not served here`);
      this.join(ws, token, ready, pool);
    });
  }

  private join(ws: WebSocket, token: WorkerToken, ready: ReadyFrame, pool: RunnerPool): void {
    const ledger = this.ledger(token);
    const logger = this.options.logger.child({ worker: token.id, model: ready.model });
    const runner: RemoteRunner = new RemoteRunner(ws, {
      worker: token.id,
      ready,
      leaseMs: this.options.leaseMs,
      logger,
      onOutcome: (_id, outcome) => this.count(ledger, outcome),
      onClose: () => {
        pool.remove(runner);
        ledger.connections.delete(runner);
        this.metrics.connected.set({ worker: token.id }, ledger.connections.size);
        if (!ledger.connections.size) ledger.connectedSince = null;
        logger.warn('worker disconnected');
        void this.writeStatus(ledger);
      },
    });
    ledger.connections.add(runner);
    ledger.connectedSince ??= new Date().toISOString();
    this.metrics.connected.set({ worker: token.id }, ledger.connections.size);
    pool.add(runner);
    logger.info({ name: token.name, device: ready.device, max_batch: ready.max_batch }, 'worker connected');
    void this.writeStatus(ledger);
  }

  private ledger(token: WorkerToken): Ledger {
    let ledger = this.ledgers.get(token.id);
    if (!ledger) {
      ledger = { token, connections: new Set(), connectedSince: null, jobsDone: 0, failures: 0, strikes: token.strikes.length, unverified: [], evicted: false, dirty: false };
      this.ledgers.set(token.id, ledger);
    }
    return ledger;
  }

  private count(ledger: Ledger, outcome: RunnerOutcome): void {
    const result = outcome.ok ? 'succeeded' : outcome.code;
    this.metrics.jobs.inc({ worker: ledger.token.id, outcome: result });
    ledger.dirty = true;
    if (outcome.ok) ledger.jobsDone++;
    else if (outcome.code !== 'canceled') ledger.failures++;
  }

  /** Drops connections whose token was revoked (or whose worker another gateway evicted). */
  private async check(): Promise<void> {
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

function refuse(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}
