// GET /api/models: the models this deployment serves, the depth of their queues, and each
// model's family, the parameters it takes with their ranges and defaults, and its image limits
// (what a client needs to fill in a form).
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import { defaultsFor, type ModelRules, type RangeWithDefault } from '../../common/params.js';
import { call } from '../dependency.js';
import type { AppEnv } from '../env.js';
import { limitsFor } from '../image.js';
import { ModelList, unavailable } from '../schemas.js';
import type { Services } from '../services.js';

const route = createRoute({
  method: 'get',
  path: '/api/models',
  operationId: 'listModels',
  security: [], // open to everyone, keys or not
  tags: ['models'],
  summary: 'The models of model_names.txt with their queue depth per priority',
  description:
    'Queue depth is the lag of the model’s consumer group, summed over partitions; refreshed at most once a second. ' +
    '`queued` and `running` split it by what the consumers hold; `rate` is the pace they measured (refreshed every few seconds).',
  responses: {
    200: { description: 'The models', content: { 'application/json': { schema: ModelList } } },
    503: unavailable('Kafka is unavailable', { code: 'kafka_unavailable', message: 'the queue (Kafka) is unavailable; retry later' }),
  },
});

export function modelRoutes(services: Services) {
  const { availability, depth, queue, models, config, rules } = services;
  const deployment = { maxSide: config.MAX_IMAGE_SIDE, maxPixels: config.MAX_IMAGE_PIXELS };
  const described = models.map((name) => {
    const { min_side, max_side, max_pixels } = limitsFor(name, deployment);
    const own = rules.get(name)!;
    return {
      name,
      defaults: defaultsFor(own),
      image: { min_side, max_side, max_pixels },
      family: own.family,
      params: paramsOf(own),
      denoising: { steps_rule: own.steps_rule, multiple: own.multiple },
      prompt_tokens: own.prompt_tokens,
    };
  });
  return new OpenAPIHono<AppEnv>().openapi(route, async (c) => {
    const [depths, loads, statuses] = await Promise.all([
      call('kafka', () => depth.get(), c.var.deadline()),
      call('kafka', () => queue.loads(), c.var.deadline()),
      availability.get(),
    ]);
    const availabilityOf = (name: string) => {
      const status = statuses.get(name);
      return { available: status?.available ?? true, unavailable_reason: status?.available === false ? status.reason : null };
    };
    return c.json({ models: described.map((model) => ({ ...model, ...availabilityOf(model.name), queue_depth: depths.get(model.name)!, ...loads.get(model.name)! })) }, 200);
  });
}

function paramsOf(rules: ModelRules) {
  const range = (applies: boolean, { minimum, maximum, exclusive_minimum, default: value }: RangeWithDefault) => ({
    applies,
    minimum,
    maximum,
    ...(exclusive_minimum ? { exclusive_minimum } : {}),
    default: value,
  });
  return {
    negative_prompt: { applies: rules.applies.negative_prompt },
    strength: range(rules.applies.strength, rules.strength),
    steps: range(true, rules.steps),
    guidance_scale: range(rules.applies.guidance_scale, rules.guidance_scale),
    preview_every: { applies: rules.applies.preview_every },
  };
}
