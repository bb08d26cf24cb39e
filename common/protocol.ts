// The runner protocol: every message between a consumer and its diffusion-py runner, as
// zod schemas parsed once where frames arrive. Mirrored by
// diffusion-py/img2img_runner/protocol.py; test/vectors/frames.json holds one vector per
// message that both sides must parse and encode alike. Framing: common/frames.ts.
import { z } from 'zod';
import { JobParams, Priority } from './jobs.js';
import type { Frame } from './frames.js';

const base = { v: z.literal(1) };
const id = z.string().min(1);

// To the runner.
export const JobFrame = z.object({ ...base, type: z.literal('job'), id, priority: Priority, params: JobParams });
export const CancelFrame = z.object({ ...base, type: z.literal('cancel'), id });
export const PingFrame = z.object({ ...base, type: z.literal('ping') });
export const ShutdownFrame = z.object({ ...base, type: z.literal('shutdown') });
export const ToRunner = z.discriminatedUnion('type', [JobFrame, CancelFrame, PingFrame, ShutdownFrame]);
export type ToRunner = z.infer<typeof ToRunner>;

// From the runner.
export const ReadyFrame = z.object({
  ...base,
  type: z.literal('ready'),
  model: z.string(),
  device: z.string(),
  dtype: z.string(),
  max_batch: z.number().int().min(1),
  load_seconds: z.number(),
});
export const StartedFrame = z.object({ ...base, type: z.literal('started'), id, batch_size: z.number().int().min(1) });
export const ProgressFrame = z.object({ ...base, type: z.literal('progress'), id, step: z.number().int(), total: z.number().int() });
/** Payload: a small WebP of the job's latents after `step` of `total` steps. */
export const PreviewFrame = z.object({ ...base, type: z.literal('preview'), id, step: z.number().int(), total: z.number().int() });
export const ResultFrame = z.object({
  ...base,
  type: z.literal('result'),
  id,
  width: z.number().int(),
  height: z.number().int(),
  batch_size: z.number().int(),
  timings: z.object({ decode_s: z.number(), compute_s: z.number(), encode_s: z.number() }),
  peak_memory_bytes: z.number().int(),
  /** What the user should know about the run (a prompt longer than a text encoder reads); a runner without notes sends none. */
  notes: z.array(z.string().max(2000)).max(16).default([]),
});
export const ErrorFrame = z.object({
  ...base,
  type: z.literal('error'),
  /** null when the error concerns no job (a frame the runner could not read). */
  id: id.nullable(),
  code: z.string(),
  retryable: z.boolean(),
  message: z.string(),
});
export const PongFrame = z.object({ ...base, type: z.literal('pong') });
/** The runner's background compile ended: compiled from its next batch (ok), or eager for good; its compile cache is saved. */
export const CompiledFrame = z.object({ ...base, type: z.literal('compiled'), ok: z.boolean(), seconds: z.number() });
export const FromRunner = z.discriminatedUnion('type', [ReadyFrame, StartedFrame, ProgressFrame, PreviewFrame, ResultFrame, ErrorFrame, PongFrame, CompiledFrame]);
export type FromRunner = z.infer<typeof FromRunner>;

export type ReadyFrame = z.infer<typeof ReadyFrame>;
export type CompiledFrame = z.infer<typeof CompiledFrame>;
export type ResultFrame = z.infer<typeof ResultFrame>;

const FROM_RUNNER_TYPES: ReadonlySet<unknown> = new Set(FromRunner.options.map((option) => option.shape.type.value));

/**
 * A frame from the runner, checked. A frame of a type this side does not know (a newer
 * runner) is undefined, to be ignored; a known one that breaks its schema throws: the
 * runner cannot be trusted past it.
 */
export function readRunnerFrame(frame: Frame): { message: FromRunner; payload: Buffer } | undefined {
  if (!FROM_RUNNER_TYPES.has(frame.header.type)) return undefined;
  const parsed = FromRunner.safeParse(frame.header);
  if (!parsed.success) throw new ProtocolError(`runner sent a malformed ${String(frame.header.type)} frame: ${parsed.error.message}`);
  return { message: parsed.data, payload: frame.payload };
}

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}
