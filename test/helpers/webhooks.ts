// Webhook test tools: a real HTTP receiver on 127.0.0.1 whose answers a test scripts, the
// dispatcher in-process or as its own process (to kill it), and a wait for the dispatcher to have
// handled every event published so far.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Admin } from 'kafkajs';
import type { Config } from '../../common/config.js';
import { createLogger } from '../../common/logger.js';
import { eventsTopic } from '../../common/topics.js';
import { createDispatcher, dispatcherGroup, type Dispatcher } from '../../dispatcher/dispatcher.js';
import { waitFor } from './consumer.js';
import { ChildService } from './processes.js';

export interface Received {
  headers: IncomingHttpHeaders;
  body: string;
  /** What the receiver answered. */
  status: number;
}

export interface Answer {
  status: number;
  headers?: Record<string, string>;
}

/** Answers every request with 200 unless `answer` says otherwise; keeps each request and counts connections. */
export class Receiver {
  readonly received: Received[] = [];
  connections = 0;
  private server: Server | undefined;

  constructor(public answer: (request: Omit<Received, 'status'>, index: number) => Answer = () => ({ status: 200 })) {}

  async start(): Promise<this> {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const incoming = { headers: request.headers, body: Buffer.concat(chunks).toString('utf8') };
        const { status, headers } = this.answer(incoming, this.received.length);
        this.received.push({ ...incoming, status });
        response.writeHead(status, headers).end();
      });
    });
    this.server.on('connection', () => this.connections++);
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    return this;
  }

  get port(): number {
    return (this.server!.address() as AddressInfo).port;
  }

  url(path = '/hook'): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  /** The requests about one job (data.id of the payload). */
  about(jobId: string): Received[] {
    return this.received.filter((request) => (JSON.parse(request.body) as { data: { id: string } }).data.id === jobId);
  }

  async close(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/** Short retries for tests: 100 ms, 400 ms, 1.6 s, ... */
export const FAST_RETRIES = { WEBHOOK_RETRY_BASE_MS: 100, WEBHOOK_ALLOW_PRIVATE: true } as const;

export async function startTestDispatcher(config: Config, overrides: Partial<Config> = {}): Promise<Dispatcher> {
  const dispatcher = createDispatcher({ ...config, ...FAST_RETRIES, DISPATCHER_METRICS_PORT: 0, ...overrides }, { logger: createLogger('dispatcher-test', config.LOG_LEVEL) });
  await dispatcher.start();
  return dispatcher;
}

/** dispatcher/main.ts as its own process, for tests that kill it. */
export function dispatcherProcess(config: Config, env: Record<string, string> = {}): ChildService {
  const settings = { TOPIC_PREFIX: config.TOPIC_PREFIX, WEBHOOK_ALLOW_PRIVATE: '1', WEBHOOK_RETRY_BASE_MS: '100', LOG_LEVEL: 'info', DISPATCHER_METRICS_PORT: '0' };
  // node --import tsx: the pid is the dispatcher's own, so SIGKILL reaches it and not a wrapper.
  return new ChildService('dispatcher', process.execPath, ['--import', 'tsx', 'dispatcher/main.ts'], { env: { ...settings, ...env } });
}

/** Resolves once the dispatcher's group has committed every event published so far: it handled them all. */
export async function dispatcherCaughtUp(admin: Admin, config: Config, timeoutMs = 60_000): Promise<void> {
  const topic = eventsTopic(config.TOPIC_PREFIX);
  const ends = new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, Number(p.high)]));
  await waitFor(
    async () => {
      const [committed] = await admin.fetchOffsets({ groupId: dispatcherGroup(config.TOPIC_PREFIX), topics: [topic] });
      const done = committed!.partitions.every((p) => Number(p.offset) >= (ends.get(p.partition) ?? 0) || (ends.get(p.partition) ?? 0) === 0);
      return done ? true : undefined;
    },
    timeoutMs,
    'the dispatcher to handle every event',
  );
}
