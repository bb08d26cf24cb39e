// GET /api/models: the models this deployment serves and the depth of their queues.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { call } from '../dependency.js';
import type { AppEnv } from '../env.js';
import { errorResponse, ModelList } from '../schemas.js';
import type { Services } from '../services.js';

const route = createRoute({
  method: 'get',
  path: '/api/models',
  security: [], // open to everyone, keys or not
  tags: ['models'],
  summary: 'The models of model_names.txt with their queue depth per priority',
  description: 'Queue depth is the lag of the model’s consumer group, summed over partitions; refreshed at most once a second.',
  responses: {
    200: { description: 'The models', content: { 'application/json': { schema: ModelList } } },
    503: errorResponse('Kafka is unavailable', { code: 'kafka_unavailable', message: 'the queue (Kafka) is unavailable; retry later' }),
  },
});

export function modelRoutes(services: Services) {
  const { depth, models } = services;
  return new OpenAPIHono<AppEnv>().openapi(route, async (c) => {
    const depths = await call('kafka', () => depth.get(), c.var.deadline());
    return c.json({ models: models.map((name) => ({ name, queue_depth: depths.get(name)! })) }, 200);
  });
}
