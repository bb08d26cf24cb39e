// The fields of POST /api/diffusion. Like the FastAPI service it replaces, each field may come
// as a query parameter or as a multipart field; the two sources are merged here and checked once.
import { createHash } from 'node:crypto';
import { z } from '@hono/zod-openapi';
import { defaultsFor, PARAMS } from '../common/params.js';
import type { Priority } from '../common/topics.js';
import { ValidationError } from './errors.js';

export const MAX_PROMPT = PARAMS.prompt.max_length;
/** C0 and C1 control characters and DEL, except tab and newline (multi-line prompts). */
const CONTROL = /[\x00-\x08\x0B-\x1F\x7F-\x9F]/;

const PRIORITY_CODES: Record<string, Priority> = { '0': 'high', '1': 'normal', '2': 'low', high: 'high', normal: 'normal', low: 'low' };

const text = (description: string, example: string, min = 0) =>
  z
    .string({ error: 'must be given once, as text' })
    // Browsers send form text with CRLF line ends; the record keeps plain newlines.
    .overwrite((value) => value.replace(/\r\n?/g, '\n'))
    .trim()
    .min(min, 'must not be empty')
    .max(MAX_PROMPT, `must be at most ${MAX_PROMPT} characters`)
    .refine((value) => !CONTROL.test(value), 'must not contain control characters (tab and newline are allowed)')
    .openapi({ description, example });

/** A number sent as text; blank text is refused rather than read as 0. */
function numeric(min: number, max: number, options: { integer?: boolean; description: string; example?: number }) {
  const message = (issue: { code: string }) => (issue.code === 'invalid_type' ? 'must be a number' : undefined);
  let schema = z.coerce.number({ error: message }).min(min, `must be at least ${min}`).max(max, `must be at most ${max}`);
  if (options.integer) schema = schema.int('must be an integer');
  const blankToNaN = (value: unknown) => (typeof value === 'string' && value.trim() === '' ? Number.NaN : value);
  return z.preprocess(blankToNaN, schema).openapi({ description: options.description, example: options.example });
}

/** The fields shared by the query string and the multipart body; every one is optional in each source. */
export function submissionFields(models: readonly string[]) {
  const known = models.join(', ');
  const { strength, steps, guidance_scale: guidance, seed } = PARAMS;
  return z.object({
    model_name: z
      .enum(models as [string, ...string[]], { error: `must be one of the known models: ${known}` })
      .optional()
      .openapi({ description: `A model listed in model_names.txt (${known})`, example: models[0] }),
    prompt: text(`What the image should become: 1..${MAX_PROMPT} characters after trimming`, 'a watercolour lighthouse at dusk', 1)
      .optional(),
    priority: z
      .enum(['high', 'normal', 'low', '0', '1', '2'], { error: 'must be one of high, normal, low (or 0, 1, 2)' })
      .transform((value) => PRIORITY_CODES[value] as Priority)
      .optional()
      .openapi({ description: 'Queue priority; 0=high, 1=normal, 2=low. Default normal', example: 'normal' }),
    negative_prompt: text('What the image should not show', 'blurry').optional(),
    strength: numeric(strength.minimum, strength.maximum, {
      description: `How far to move from the input image (${strength.minimum}..${strength.maximum}). Default ${strength.default}`,
      example: strength.default,
    }).optional(),
    steps: numeric(steps.minimum, steps.maximum, {
      integer: true,
      description: `Denoising steps (${steps.minimum}..${steps.maximum}). Default ${steps.default}, or the model’s own`,
      example: 10,
    }).optional(),
    guidance_scale: numeric(guidance.minimum, guidance.maximum, {
      description: `Classifier-free guidance (${guidance.minimum}..${guidance.maximum}). Default ${guidance.default}`,
      example: guidance.default,
    }).optional(),
    seed: numeric(seed.minimum, seed.maximum, {
      integer: true,
      description: `Random seed (${seed.minimum}..${seed.maximum}); random when absent, and recorded in the job`,
      example: 1234,
    }).optional(),
  });
}

export type SubmissionFields = z.infer<ReturnType<typeof submissionFields>>;

export interface Submission {
  model_name: string;
  priority: Priority;
  prompt: string;
  negative_prompt: string | null;
  strength: number;
  steps: number;
  guidance_scale: number;
  /** null when the client left it to us; a random one is drawn at enqueue time. */
  seed: number | null;
}

const isSet = (value: unknown) => value !== undefined;

/** Merges the two sources; a field given in both with different values is refused rather than guessed. */
export function mergeFields(query: SubmissionFields, form: SubmissionFields): SubmissionFields {
  const merged: Record<string, unknown> = { ...query };
  for (const [field, value] of Object.entries(form)) {
    if (!isSet(value)) continue;
    const other = merged[field];
    if (isSet(other) && other !== value) {
      throw new ValidationError(field, `${field}: given as a query parameter and as a form field with different values`);
    }
    merged[field] = value;
  }
  return merged as SubmissionFields;
}

export function toSubmission(fields: SubmissionFields): Submission {
  const { model_name, prompt } = fields;
  if (!model_name) throw new ValidationError('model_name', 'model_name is required (a query parameter or a form field)');
  if (!prompt) throw new ValidationError('prompt', `prompt is required: 1..${MAX_PROMPT} characters after trimming`);
  const defaults = defaultsFor(model_name);
  return {
    model_name,
    priority: fields.priority ?? 'normal',
    prompt,
    negative_prompt: fields.negative_prompt || null,
    strength: fields.strength ?? defaults.strength,
    steps: fields.steps ?? defaults.steps,
    guidance_scale: fields.guidance_scale ?? defaults.guidance_scale,
    seed: fields.seed ?? null,
  };
}

/** Identifies "the same request" for Idempotency-Key: every field (before defaults are drawn) and the image bytes. */
export function requestHash(submission: Submission, imageSha256: string): string {
  const { model_name, priority, prompt, negative_prompt, strength, steps, guidance_scale, seed } = submission;
  const canonical = JSON.stringify([model_name, priority, prompt, negative_prompt, strength, steps, guidance_scale, seed, imageSha256]);
  return createHash('sha256').update(canonical).digest('hex');
}
