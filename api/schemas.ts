// The response shapes of the HTTP API. The OpenAPI document is generated from these
// same zod schemas, so the documentation cannot drift from what the routes send.
import { z, type RouteConfig } from '@hono/zod-openapi';
import { JOB_ID } from '../common/jobs.js';
import { EXAMPLE_ID } from '../common/view.js';

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'validation_error' }),
      message: z.string().openapi({ example: 'priority: must be one of high, normal, low (or 0, 1, 2)' }),
      field: z.string().optional().openapi({ example: 'priority' }),
      request_id: z.string().optional().openapi({ description: 'The request’s id, as in X-Request-Id and the API’s log lines', example: '0b6c5cf4-3c1e-4f7b-9d3a-5f0e2a9d8c11' }),
    }),
  })
  .openapi('Error');

type HeaderSpec = { description: string; required?: boolean; schema: { type: 'integer'; minimum?: number; example?: number } };
type Responses = RouteConfig['responses'];

/** An error response for the route table, with one example per situation. */
export const errorResponse = (description: string, example: { code: string; message: string; field?: string }, headers?: Record<string, HeaderSpec>) => ({
  description,
  ...(headers ? { headers } : {}),
  content: { 'application/json': { schema: ErrorBody, example: { error: example } } },
});

/** Sent with every 429 and with the 503s of a dependency that failed or is busy; `absent` says when a response goes without. */
export const retryAfter = (example: number, absent?: string): Record<string, HeaderSpec> => ({
  'Retry-After': {
    description: `Seconds to wait before trying again${absent ? `; absent ${absent}` : ''}`,
    required: !absent,
    schema: { type: 'integer', minimum: 1, example },
  },
});

/** With API keys, on every answer to a key that has a rate limit (IETF draft fields). */
const rateLimit: Record<string, HeaderSpec> = {
  'RateLimit-Limit': { description: 'With a rate-limited key: the jobs it may submit per window', schema: { type: 'integer', minimum: 1, example: 600 } },
  'RateLimit-Remaining': { description: 'With a rate-limited key: the submissions left in this window', schema: { type: 'integer', minimum: 0, example: 599 } },
  'RateLimit-Reset': { description: 'With a rate-limited key: seconds until the window starts again', schema: { type: 'integer', minimum: 0, example: 12 } },
};

/** A dependency (object storage, Kafka, Redis) failed, missed its deadline or is busy: 503 with Retry-After. */
export const unavailable = (description: string, example: { code: string; message: string }) => errorResponse(description, example, retryAfter(2));

/**
 * The responses of a route that needs a key when keys are on: each answer to a valid key carries
 * the key's RateLimit-* fields (api/auth.ts), so each response but 401 documents them.
 */
export function keyed<T extends Responses>(responses: T): T {
  const withFields = Object.entries(responses).map(([status, response]) =>
    status === '401' || '$ref' in response ? [status, response] : [status, { ...response, headers: { ...response.headers, ...rateLimit } }],
  );
  return Object.fromEntries(withFields) as T;
}


const ModelRange = z.object({
  applies: z.boolean(),
  minimum: z.number(),
  exclusive_minimum: z.boolean().optional(),
  maximum: z.number(),
  default: z.number(),
});

export const ModelList = z
  .object({
    models: z.array(
      z.object({
        name: z.string().openapi({ example: 'tiny' }),
        available: z.boolean().openapi({
          description: 'false when a consumer found the model’s source unusable at start (a missing folder, no diffusers pipeline, a pipeline no family serves): its jobs are refused with 503 model_unavailable',
          example: true,
        }),
        unavailable_reason: z.string().nullable().openapi({ description: 'Why the model is unavailable; null when it is available', example: null }),
        queue_depth: z
          .object({ high: z.number().int(), normal: z.number().int(), low: z.number().int(), total: z.number().int() })
          .openapi({
            description:
              'Jobs of the model queued or running, per priority: the lag of its consumer group, which commits a job’s offset once that job and those before it in its partition have ended',
            example: { high: 0, normal: 3, low: 1, total: 4 },
          }),
        queued: z.number().int().openapi({
          description: 'Jobs of the model waiting to start (some may wait inside a runner for their batch): queue_depth.total less `running`',
          example: 3,
        }),
        running: z.number().int().openapi({
          description: 'Jobs of the model its runners have started and not finished (as the consumers last reported, every few seconds)',
          example: 1,
        }),
        rate: z
          .object({
            jobs_per_second: z.number().openapi({ description: 'Jobs ended per second of work, over the consumers’ last minute with jobs, all consumers together', example: 2.5 }),
            mean_run_s: z.number().nullable().openapi({ description: 'Mean seconds from a job’s start to its success over that minute; null without a success', example: 1.6 }),
            updated_at: z.string().openapi({ description: 'When a consumer last reported it', example: '2025-01-01T12:00:00.000Z' }),
          })
          .nullable()
          .openapi({ description: 'The model’s measured pace, which queued jobs’ estimated times divide by; null until a consumer has ended jobs', example: null }),
        defaults: z
          .object({ strength: z.number(), steps: z.number().int(), guidance_scale: z.number() })
          .openapi({
            description: 'What a job of this model gets for a parameter it leaves out (common/params.json)',
            example: { strength: 0.6, steps: 10, guidance_scale: 7.5 },
          }),
        image: z
          .object({ min_side: z.number().int(), max_side: z.number().int(), max_pixels: z.number().int() })
          .openapi({
            description: 'The images this model takes: each side from min_side to max_side pixels, and at most max_pixels in all',
            example: { min_side: 8, max_side: 4096, max_pixels: 1048576 },
          }),
        family: z.string().nullable().openapi({
          description: 'The model’s family (common/params.json `families`); null when this deployment cannot tell (its folder is not readable by the API): the general rules then apply here and the runner checks its own',
          example: 'sd',
        }),
        params: z
          .object({
            negative_prompt: z.object({ applies: z.boolean() }),
            strength: ModelRange,
            steps: ModelRange,
            guidance_scale: ModelRange,
            preview_every: z.object({ applies: z.boolean() }),
          })
          .openapi({
            description: 'What the model takes: a field that does not apply is refused (422 invalid_for_model), and its job records the neutral value',
            example: {
              negative_prompt: { applies: true },
              strength: { applies: true, minimum: 0, exclusive_minimum: true, maximum: 1, default: 0.6 },
              steps: { applies: true, minimum: 1, maximum: 150, default: 10 },
              guidance_scale: { applies: true, minimum: 0, maximum: 30, default: 7.5 },
              preview_every: { applies: true },
            },
          }),
        denoising: z.object({ steps_rule: z.enum(['times_strength', 'flow', 'all']), multiple: z.number().int() }).openapi({
          description:
            'How many denoising steps a job runs (times_strength: floor(steps × strength); flow: steps − floor(steps − steps × strength), at least one; all: steps), and the multiple of pixels its sides are computed at (the result has the input’s size)',
          example: { steps_rule: 'times_strength', multiple: 8 },
        }),
        prompt_tokens: z.number().int().nullable().openapi({
          description:
            "The tokens the model's main text encoder reads (CLIP: 77; T5 or Qwen: the family's limit); null when the API does not know the model's family. Of a longer prompt the model reads the start, and the job's notes say so.",
          example: 77,
        }),
      }),
    ),
  })
  .openapi('Models');

export const Health = z.object({ status: z.literal('ok') }).openapi('Health');

export const Readiness = z
  .object({
    status: z.literal('ready'),
    checks: z.object({
      kafka: z.literal('ok'),
      storage: z.literal('ok'),
      limits: z.string().optional().openapi({
        description: 'With API keys: the limits store (Redis): ok, or unreachable and which policy applies (fail open keeps the API ready)',
        example: 'ok',
      }),
    }),
  })
  .openapi('Readiness');

export const NotReady = z
  .object({
    error: ErrorBody.shape.error,
    checks: z.object({ kafka: z.string(), storage: z.string(), limits: z.string().optional() }),
  })
  .openapi('NotReady');

export const JobIdParam = z.object({
  id: z.string().openapi({
    param: { name: 'id', in: 'path' },
    // Documented, not checked by the schema: a malformed id answers 404 like an unknown one (api/lookup.ts).
    pattern: JOB_ID.source,
    description: 'The job id (22 characters of base64url); a malformed id answers 404 like an unknown one',
    example: EXAMPLE_ID,
  }),
});

/** What a job route may answer for want of a valid key (only when the API requires keys). */
export const unauthorized = errorResponse('No valid API key (Authorization: Bearer <key>); with WWW-Authenticate: Bearer', {
  code: 'unauthorized',
  message: 'a valid API key is required: send Authorization: Bearer <key>',
  field: 'Authorization',
});

/** Too many failed key checks from the client's address (any route that needs a key). */
export const authFailures = errorResponse(
  'Too many requests without a valid API key from this address; retry after Retry-After seconds',
  {
    code: 'auth_failures',
    message: 'too many requests without a valid API key from this address; retry in 42 s',
    field: 'Authorization',
  },
  retryAfter(42),
);

/** Over a key's rate, concurrency or cost limit, or the model's queue ceiling; with Retry-After (and RateLimit-* where the key has a rate). */
export const tooManyRequests = errorResponse(
  'Over a limit: the code names which (rate_limit, concurrency_limit, cost_limit, queue_full, auth_failures); retry after Retry-After seconds',
  {
    code: 'rate_limit',
    message: 'this key may submit 600 jobs per 60 s; retry in 12 s',
  },
  { ...retryAfter(12), ...rateLimit },
);
