// GET /api/workers (admin): the remote GPU workers, as the gateways that hold their connections
// last wrote them (common/workers.ts), with the strikes and evictions of their tokens.
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { WorkerStatus, WorkerStore } from '../../common/workers.js';
import { seesAll } from '../auth.js';
import { call } from '../dependency.js';
import type { AppEnv } from '../env.js';
import { Unauthorized } from '../errors.js';
import { authFailures, keyed, unauthorized, unavailable } from '../schemas.js';
import type { Services } from '../services.js';

const WorkerList = z.object({ workers: z.array(WorkerStatus) }).openapi('WorkerList');

const route = createRoute({
  method: 'get',
  path: '/api/workers',
  operationId: 'listWorkers',
  tags: ['workers'],
  summary: 'Remote GPU workers: connected since, models, capacity, jobs done, failures, strikes, state (admin keys only)',
  responses: keyed({
    200: { description: 'Every worker token and its live status', content: { 'application/json': { schema: WorkerList } } },
    401: unauthorized,
    429: authFailures,
    503: unavailable('Object storage is unavailable', { code: 'storage_unavailable', message: 'object storage is unavailable; retry later' }),
  }),
});

export function workerRoutes(services: Services) {
  const workers = new WorkerStore(services.store);
  return new OpenAPIHono<AppEnv>().openapi(route, async (c) => {
    if (!seesAll(c.var.principal)) throw new Unauthorized();
    return c.json({ workers: await call('storage', () => workers.statuses(), c.var.deadline()) }, 200);
  });
}
