// GET /healthz: the process is alive. GET /readyz: Kafka and object storage answer in time.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { race } from '../../common/deadline.js';
import { Health, NotReady, Readiness } from '../schemas.js';
import type { Services } from '../services.js';

const healthz = createRoute({
  method: 'get',
  path: '/healthz',
  tags: ['health'],
  summary: 'Liveness: the process answers',
  responses: { 200: { description: 'Alive', content: { 'application/json': { schema: Health } } } },
});

const readyz = createRoute({
  method: 'get',
  path: '/readyz',
  tags: ['health'],
  summary: 'Readiness: Kafka and object storage are reachable',
  responses: {
    200: { description: 'Ready', content: { 'application/json': { schema: Readiness } } },
    503: {
      description: 'A dependency is unreachable; `checks` says which',
      content: {
        'application/json': {
          schema: NotReady,
          example: {
            error: { code: 'not_ready', message: 'not ready: kafka' },
            checks: { kafka: 'unreachable: deadline exceeded', storage: 'ok' },
          },
        },
      },
    },
  },
});

/** 'ok', or why not; never slower than the deadline. */
async function probe(work: (signal: AbortSignal) => Promise<unknown>, timeoutMs: number): Promise<string> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    await race(work(signal), signal);
    return 'ok';
  } catch (error) {
    return `unreachable: ${(error as Error).message || (error as Error).name}`.slice(0, 200);
  }
}

export function healthRoutes(services: Services) {
  const { admin, config, store } = services;
  const timeoutMs = Math.min(config.DEPENDENCY_TIMEOUT_MS, 2000);
  const kafka = () => admin.connect().then(() => admin.describeCluster());
  const storage = (signal: AbortSignal) => store.ping(signal);
  return new OpenAPIHono()
    .openapi(healthz, (c) => c.json({ status: 'ok' as const }, 200))
    .openapi(readyz, async (c) => {
      const [kafkaState, storageState] = await Promise.all([probe(kafka, timeoutMs), probe(storage, timeoutMs)]);
      const checks = { kafka: kafkaState, storage: storageState };
      if (checks.kafka === 'ok' && checks.storage === 'ok') return c.json({ status: 'ready' as const, checks: { kafka: 'ok' as const, storage: 'ok' as const } }, 200);
      const down = Object.entries(checks).filter(([, state]) => state !== 'ok').map(([name]) => name);
      return c.json({ error: { code: 'not_ready', message: `not ready: ${down.join(', ')}` }, checks }, 503);
    });
}
