// The response shapes of the HTTP API. The OpenAPI document is generated from these
// same zod schemas, so the documentation cannot drift from what the routes send.
import { z } from '@hono/zod-openapi';
import { JOB_ID, JobStatus as JobStatusSchema } from '../common/jobs.js';
import { PRIORITIES } from '../common/topics.js';

// Rebuilt with the zod that @hono/zod-openapi extends: schemas made elsewhere may come from
// another copy of zod (test runners load modules their own way) and lack .openapi().
const JobStatus = z.enum(JobStatusSchema.options);
const Priority = z.enum(PRIORITIES);

const EXAMPLE_ID = 'q0vN3rJ8T6yWm1bXc2dEfA';
const at = (path: string) => `http://127.0.0.1:8000${path}`;

export const ErrorBody = z
  .object({
    error: z.object({
      code: z.string().openapi({ example: 'validation_error' }),
      message: z.string().openapi({ example: 'priority: must be one of high, normal, low (or 0, 1, 2)' }),
      field: z.string().optional().openapi({ example: 'priority' }),
    }),
  })
  .openapi('Error');

/** An error response for the route table, with one example per situation. */
export const errorResponse = (description: string, example: { code: string; message: string; field?: string }) => ({
  description,
  content: { 'application/json': { schema: ErrorBody, example: { error: example } } },
});

export const JobLinks = z.object({
  status_url: z.url().openapi({ example: at(`/api/jobs/${EXAMPLE_ID}`) }),
  result_url: z.url().openapi({ example: at(`/api/results/${EXAMPLE_ID}`) }),
  events_url: z.url().openapi({ example: at(`/api/jobs/${EXAMPLE_ID}/events`) }),
});

export const JobAccepted = z
  .object({
    id: z.string().openapi({ example: EXAMPLE_ID }),
    status: JobStatus.openapi({ example: 'queued' }),
    model_name: z.string().openapi({ example: 'tiny' }),
    priority: Priority.openapi({ example: 'normal' }),
  })
  .extend(JobLinks.shape)
  .openapi('JobAccepted');

export const JobView = z
  .object({
    id: z.string().openapi({ example: EXAMPLE_ID }),
    status: JobStatus.openapi({ example: 'running' }),
    model_name: z.string().openapi({ example: 'tiny' }),
    priority: Priority.openapi({ example: 'normal' }),
    params: z.object({
      prompt: z.string().openapi({ example: 'a watercolour lighthouse at dusk' }),
      negative_prompt: z.string().nullable().openapi({ example: null }),
      strength: z.number().openapi({ example: 0.6 }),
      steps: z.number().int().openapi({ example: 10 }),
      guidance_scale: z.number().openapi({ example: 7.5 }),
      seed: z.number().int().openapi({ example: 1234 }),
    }),
    width: z.number().int().openapi({ example: 512 }),
    height: z.number().int().openapi({ example: 512 }),
    progress: z
      .object({ step: z.number().int(), total: z.number().int() })
      .nullable()
      .openapi({ description: 'Denoising progress while running', example: { step: 3, total: 10 } }),
    timings: z
      .object({ queue_s: z.number(), run_s: z.number(), total_s: z.number(), compute_s: z.number().optional() })
      .nullable()
      .openapi({ example: null }),
    error: z.object({ code: z.string(), message: z.string() }).nullable().openapi({ example: null }),
    created_at: z.string().openapi({ example: '2025-01-01T12:00:00.000Z' }),
    started_at: z.string().nullable().openapi({ example: '2025-01-01T12:00:01.000Z' }),
    finished_at: z.string().nullable().openapi({ example: null }),
    attempts: z.number().int().openapi({ example: 1 }),
    cancel_requested: z.boolean().openapi({ example: false }),
    worker: z.string().nullable().openapi({ description: 'Who computed the result: `local`, or a remote worker id (GET /api/workers)', example: null }),
    verification: z
      .object({
        policy: z.string(),
        state: z.enum(['waiting_for_workers', 'single', 'verified']),
        workers: z.array(z.string()),
        outvoted: z.array(z.string()),
      })
      .nullable()
      .openapi({
        description: "How the result was checked (verify= of the model): `waiting_for_workers` while the check waits for enough distinct workers",
        example: null,
      }),
  })
  .extend(JobLinks.shape)
  .openapi('Job');
export type JobView = z.infer<typeof JobView>;

export const ModelList = z
  .object({
    models: z.array(
      z.object({
        name: z.string().openapi({ example: 'tiny' }),
        queue_depth: z
          .object({ high: z.number().int(), normal: z.number().int(), low: z.number().int(), total: z.number().int() })
          .openapi({
            description: 'Messages not yet consumed by the model’s consumer group, per priority',
            example: { high: 0, normal: 3, low: 1, total: 4 },
          }),
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

/** Over a key's rate or concurrency limit, or the model's queue ceiling; with Retry-After and RateLimit-* fields. */
/** Too many failed key checks from the client's address (any route that needs a key). */
export const authFailures = errorResponse('Too many requests without a valid API key from this address; retry after Retry-After seconds', {
  code: 'auth_failures',
  message: 'too many requests without a valid API key from this address; retry in 42 s',
  field: 'Authorization',
});

export const tooManyRequests = errorResponse('Over a limit: the code names which (rate_limit, concurrency_limit, cost_limit, queue_full, auth_failures); retry after Retry-After seconds', {
  code: 'rate_limit',
  message: 'this key may submit 600 jobs per 60 s; retry in 12 s',
});
