// The public JSON of a job, as the API answers it, webhooks carry it and the batch client reads
// it: the record minus storage internals, plus absolute links. The OpenAPI document is
// generated from these schemas, so the documentation cannot drift from what is sent.
import { z } from '@hono/zod-openapi';
import { JobStatus as JobStatusSchema, type JobRecord } from './jobs.js';
import { PRIORITIES } from './topics.js';

// Rebuilt with the zod that @hono/zod-openapi extends: schemas made elsewhere may come from
// another copy of zod (test runners load modules their own way) and lack .openapi().
const JobStatus = z.enum(JobStatusSchema.options);
const Priority = z.enum(PRIORITIES);

export const EXAMPLE_ID = 'q0vN3rJ8T6yWm1bXc2dEfA';
const at = (path: string) => `http://127.0.0.1:8000${path}`;

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
    queue_position: z.number().int().nullable().openapi({
      description:
        'While queued: how many jobs of the same model run before this one, running ones included (0: none; it starts next). Higher priorities and jobs accepted earlier are ahead of it; a higher-priority job accepted later moves ahead too. Counted from Kafka offsets and the consumer group’s commits, refreshed at most once a second. null when not queued, or when Kafka cannot be read',
      example: null,
    }),
    estimated_start_at: z.string().nullable().openapi({
      description:
        'While queued: now plus the jobs ahead of it that have not started (queue_position less the model’s running jobs) divided by the model’s measured rate (GET /api/models `rate`); null when not queued or no rate is measured yet',
      example: null,
    }),
    estimated_finish_at: z.string().nullable().openapi({
      description: 'While queued: estimated_start_at plus the model’s mean run time; null when either is unknown',
      example: null,
    }),
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
    deadlines: z
      .object({ start_by: z.string().nullable(), cancel_at: z.string().nullable() })
      .nullable()
      .openapi({
        description: 'start_by: not started by then, the job ends `aborted`; cancel_at (Cancel-After): it ends then, aborted or canceled. null: none',
        example: null,
      }),
    notes: z.array(z.string()).openapi({
      description:
        "What the user should know about how the job ran. A prompt longer than a model's text encoder reads (CLIP 77 tokens; the model's T5 or Qwen encoder as GET /api/models' prompt_tokens says) runs with its start only, as diffusers does, and a note says how many tokens it had and how many were read.",
      example: [],
    }),
  })
  .extend(JobLinks.shape)
  .openapi('Job');
export type JobView = z.infer<typeof JobView>;

export const jobLinks = (base: string, id: string) => ({
  status_url: `${base}/api/jobs/${id}`,
  result_url: `${base}/api/results/${id}`,
  events_url: `${base}/api/jobs/${id}/events`,
});

/** Where a queued job stands (api/queue.ts); all null for a job in any other state. */
export interface JobStanding {
  queue_position: number | null;
  estimated_start_at: string | null;
  estimated_finish_at: string | null;
}
export const NO_STANDING: JobStanding = { queue_position: null, estimated_start_at: null, estimated_finish_at: null };

export function jobView(record: JobRecord, base: string, standing: JobStanding = NO_STANDING): JobView {
  const { id, status, model_name, priority, params, width, height, progress, timings, error } = record;
  const { created_at, started_at, finished_at, attempts, cancel_requested } = record;
  return {
    id,
    status,
    model_name,
    priority,
    params,
    width,
    height,
    progress: status === 'running' ? progress : null,
    timings,
    error,
    created_at,
    started_at,
    finished_at,
    ...(status === 'queued' ? standing : NO_STANDING),
    attempts,
    cancel_requested,
    worker: record.worker ?? null,
    verification: record.verification ?? null,
    deadlines: record.deadlines ?? null,
    notes: record.notes ?? [],
    ...jobLinks(base, id),
  };
}

export function acceptedView(record: JobRecord, base: string) {
  const { id, status, model_name, priority } = record;
  return { id, status, model_name, priority, ...jobLinks(base, id) };
}
