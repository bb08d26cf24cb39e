// GET /healthz: the process is alive. GET /readyz: Kafka and object storage answer in time.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { Health, NotReady, Readiness } from '../schemas.js';
import type { Services } from '../services.js';

const healthz = createRoute({
  method: 'get',
  path: '/healthz',
  operationId: 'checkLiveness',
  security: [], // open to everyone, keys or not
  tags: ['health'],
  summary: 'Liveness: the process answers',
  responses: { 200: { description: 'Alive', content: { 'application/json': { schema: Health } } } },
});

const readyz = createRoute({
  method: 'get',
  path: '/readyz',
  operationId: 'checkReadiness',
  security: [], // open to everyone, keys or not
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

export function healthRoutes(services: Services) {
  const { config } = services;
  return new OpenAPIHono()
    .openapi(healthz, (c) => c.json({ status: 'ok' as const }, 200))
    .openapi(readyz, async (c) => {
      const { kafka: kafkaState, storage: storageState, limits: limitsState } = await services.dependencies();
      // Redis down is not fatal when limits fail open: the API stays ready and says so.
      const limits = limitsState && limitsState !== 'ok' ? `${limitsState} (limits fail ${config.LIMITS_WHEN_REDIS_DOWN})` : limitsState;
      const limitsOk = !limits || limitsState === 'ok' || config.LIMITS_WHEN_REDIS_DOWN === 'open';
      const extra = limits ? { limits } : {};
      if (kafkaState === 'ok' && storageState === 'ok' && limitsOk) {
        return c.json({ status: 'ready' as const, checks: { kafka: 'ok' as const, storage: 'ok' as const, ...extra } }, 200);
      }
      const checks = { kafka: kafkaState, storage: storageState, ...extra };
      const down = [kafkaState !== 'ok' && 'kafka', storageState !== 'ok' && 'storage', !limitsOk && 'limits'].filter(Boolean);
      return c.json({ error: { code: 'not_ready', message: `not ready: ${down.join(', ')}` }, checks }, 503);
    });
}
