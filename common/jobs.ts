// The shapes that cross process boundaries for one job: its parameters, its durable
// record (jobs/<id>/job.json), its Kafka message and its lifecycle events.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { PRIORITIES } from './topics.js';

/** 128 random bits, base64url: URL-safe, 22 characters. */
export const newJobId = () => randomBytes(16).toString('base64url');
export const JOB_ID = /^[A-Za-z0-9_-]{22}$/;

/**
 * How a job ends: each is a status of its record and the type of the event that announces it.
 * `aborted`: its deadline passed before it started; it never reached a runner.
 */
export const ENDINGS = ['succeeded', 'failed', 'canceled', 'aborted'] as const;
export type Ending = (typeof ENDINGS)[number];

/** `expired`: a job past its retention; its input and output are gone, its record stays as a tombstone. */
export const JobStatus = z.enum(['queued', 'running', ...ENDINGS, 'expired']);
export type JobStatus = z.infer<typeof JobStatus>;
/** The statuses a job never leaves: an ending, or expired after one. */
export const TERMINAL: ReadonlySet<JobStatus> = new Set([...ENDINGS, 'expired']);
export const isEnding = (type: string): type is Ending => (ENDINGS as readonly string[]).includes(type);

export const Priority = z.enum(PRIORITIES);

export const JobParams = z.object({
  prompt: z.string(),
  negative_prompt: z.string().nullable(),
  strength: z.number(),
  steps: z.number().int(),
  guidance_scale: z.number(),
  seed: z.number().int(),
  /** A preview every this many steps while it runs; 0 or absent: none. */
  preview_every: z.number().int().optional(),
});
export type JobParams = z.infer<typeof JobParams>;

export const JobError = z.object({ code: z.string(), message: z.string() });
export type JobError = z.infer<typeof JobError>;

/** `preview`: a new preview of a running job's latents is stored (its step and total). */
export const EventType = z.enum(['queued', 'started', 'progress', 'preview', ...ENDINGS, 'cancel_requested']);
export type EventType = z.infer<typeof EventType>;

/** A lifecycle event on img2img.events, keyed by the job id. */
export const JobEvent = z.object({
  v: z.literal(1),
  id: z.string(),
  type: EventType,
  at: z.string(),
  model_name: z.string(),
  step: z.number().int().optional(),
  total: z.number().int().optional(),
  attempt: z.number().int().optional(),
  error: JobError.optional(),
});
export type JobEvent = z.infer<typeof JobEvent>;

/** How a result was checked (consumer/remote/verify.ts); the policy is the model's in model_names.txt. */
export const Verification = z.object({
  policy: z.string(),
  /** waiting_for_workers: the check needs more distinct workers than are connected; single: one worker ran it. */
  state: z.enum(['waiting_for_workers', 'single', 'verified']),
  workers: z.array(z.string()),
  /** Workers whose result the others outvoted (each got a strike). */
  outvoted: z.array(z.string()),
});
export type Verification = z.infer<typeof Verification>;

/** A message's place in Kafka (the offset as a decimal string, as kafkajs gives it). */
export const QueuePlace = z.object({ topic: z.string(), partition: z.number().int(), offset: z.string() });
export type QueuePlace = z.infer<typeof QueuePlace>;

export const JobRecord = z.object({
  v: z.literal(1),
  id: z.string(),
  model_name: z.string(),
  priority: Priority,
  status: JobStatus,
  params: JobParams,
  /** Size of the stored input (and of the output). */
  width: z.number().int(),
  height: z.number().int(),
  input_key: z.string(),
  output_key: z.string().nullable(),
  created_at: z.string(),
  updated_at: z.string(),
  started_at: z.string().nullable(),
  finished_at: z.string().nullable(),
  attempts: z.number().int(),
  progress: z.object({ step: z.number().int(), total: z.number().int() }).nullable(),
  timings: z
    .object({ queue_s: z.number(), run_s: z.number(), total_s: z.number(), compute_s: z.number().optional() })
    .nullable(),
  peak_memory_bytes: z.number().nullable(),
  error: JobError.nullable(),
  cancel_requested: z.boolean(),
  /** sha256 of the idempotency key and of the request, when the client sent a key. */
  idempotency: z.object({ key_hash: z.string(), request_hash: z.string() }).nullable(),
  /**
   * Events written with the change they announce and not yet acknowledged by Kafka: whoever
   * finds them here publishes them (at least once) and removes them. A message's offset is
   * committed only once its record's outbox is empty, so a restarted consumer finishes the job.
   */
  outbox: z.array(JobEvent).default([]),
  /** The tenant whose API key submitted the job; null when the API runs without keys. */
  tenant: z.string().nullable().default(null),
  /** Where and which lifecycle events are delivered as signed webhooks; null: none. */
  webhook: z.object({ url: z.string(), events: z.array(EventType) }).nullable().default(null),
  /** Who computed the kept result: `local` (the consumer's own GPUs) or a remote worker's id. */
  // Optional rather than defaulted: records written before remote workers parse, and a job
  // that never ran has neither.
  worker: z.string().nullable().optional(),
  verification: Verification.nullable().optional(),
  /**
   * start_by: the job ends aborted if it has not started by then; cancel_at: it ends then, aborted
   * if it has not started, canceled if it runs. Absent or null: none.
   */
  deadlines: z.object({ start_by: z.string().nullable(), cancel_at: z.string().nullable() }).nullable().optional(),
  /** What the runner said about how the job ran (a prompt cut to what a text encoder reads). */
  notes: z.array(z.string()).optional(),
  /** Where the job's message is in Kafka, as the broker acknowledged it: what its queue position is counted from. */
  queue: QueuePlace.optional(),
});
export type JobRecord = z.infer<typeof JobRecord>;

/** The Kafka message on img2img.<model>.<priority>, keyed by the job id. */
export const JobMessage = z.object({
  v: z.literal(1),
  id: z.string().regex(JOB_ID),
  model_name: z.string(),
  priority: Priority,
  created_at: z.string(),
  /**
   * The record as its intake writes it, less its place in Kafka (which the consumer reads off the
   * message): the consumer starts the job from it without reading it (consumer/job.ts).
   */
  record: JobRecord.optional(),
});
export type JobMessage = z.infer<typeof JobMessage>;


/** A cancel request on img2img.cancels, keyed by the job id. */
export const CancelRequest = z.object({ v: z.literal(1), id: z.string(), model_name: z.string(), at: z.string() });
export type CancelRequest = z.infer<typeof CancelRequest>;

/** A Kafka message's value parsed with `schema`; why not, when it does not fit. */
export function parseValue<T>(schema: z.ZodType<T>, value: Buffer | null): { success: true; data: T } | { success: false; problem: string } {
  let json: unknown;
  try {
    json = JSON.parse(String(value));
  } catch (error) {
    return { success: false, problem: `not JSON: ${(error as Error).message}` };
  }
  const parsed = schema.safeParse(json);
  return parsed.success ? { success: true, data: parsed.data } : { success: false, problem: parsed.error.message };
}

