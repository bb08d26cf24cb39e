// Admission of remote GPU workers: a worker dials in over a WebSocket (GET
// /api/workers/connect, Authorization: Bearer <worker token>), sends its ready frame, and
// becomes one more runner in the pool of the model it serves (consumer/remote/runner.ts). It
// lives in the consumer process, because that is where a model's pool, its Kafka offsets and
// its job runs already are: a remote job is committed exactly like a local one. What is known
// of each worker is its ledger's (consumer/remote/ledger.ts).
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import { WebSocketServer, type WebSocket } from 'ws';
import { FrameDecoder } from '../../common/frames.js';
import type { Logger } from '../../common/logger.js';
import { readRunnerFrame, type ReadyFrame } from '../../common/protocol.js';
import type { WorkerStore, WorkerToken } from '../../common/workers.js';
import type { RunnerPool } from '../pool.js';
import { WorkerLedgers } from './ledger.js';
import { RemoteRunner } from './runner.js';

export const CONNECT_PATH = '/api/workers/connect';
/** A connected worker must send its ready frame within this long. */
const READY_TIMEOUT_MS = 30_000;
/** How often tokens of live connections are checked again (each read is cached 2 s: a revocation bites within ~3 s). */
const CHECK_INTERVAL_MS = 1000;

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

export class Gateway {
  /** What the verifier reports of workers goes here. */
  readonly ledgers: WorkerLedgers;
  private readonly server: Server;
  private readonly sockets = new WebSocketServer({ noServer: true, maxPayload: 300 * 1024 * 1024 });
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly options: GatewayOptions) {
    this.ledgers = new WorkerLedgers(options);
    this.server = createServer((_request, response) => response.writeHead(426, { Connection: 'close' }).end('a WebSocket endpoint\n'));
    this.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => void this.upgrade(request, socket, head));
  }

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(this.options.port, this.options.host, resolve));
    this.timer = setInterval(() => void this.ledgers.check(), CHECK_INTERVAL_MS).unref();
  }

  /** ws://host:port/api/workers/connect once started. */
  url(): string {
    const address = this.server.address() as AddressInfo;
    return `ws://${this.options.host}:${address.port}${CONNECT_PATH}`;
  }

  /** Closes every worker connection (they reconnect to another consumer, or to this one when it is back). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.ledgers.closeAll(1001, 'consumer stopping');
    this.sockets.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
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
    const logger = this.options.logger.child({ worker: token.id, model: ready.model });
    const runner: RemoteRunner = new RemoteRunner(ws, {
      worker: token.id,
      ready,
      leaseMs: this.options.leaseMs,
      logger,
      onOutcome: (_id, outcome) => this.ledgers.count(token, outcome),
      onClose: () => {
        pool.remove(runner);
        this.ledgers.disconnected(token, runner);
        logger.warn('worker disconnected');
      },
    });
    this.ledgers.connected(token, runner);
    pool.add(runner);
    logger.info({ name: token.name, device: ready.device, max_batch: ready.max_batch }, 'worker connected');
  }
}

function refuse(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}
