// The fields of POST /api/diffusion. Each field may come as a query parameter or as a
// multipart field (clients of simple HTTP tools send query parameters); the two sources are merged here and checked once.
import { createHash } from 'node:crypto';
import { z } from '@hono/zod-openapi';
import toRegexRange from 'to-regex-range';
import { defaultsFor, denoisingSteps, OPTIONAL_FIELDS, PARAMS, type ModelRules, type RangeWithDefault } from '../common/params.js';
import type { Priority } from '../common/topics.js';
import { START_BY_PATTERN } from './deadlines.js';
import { ModelParamError, ValidationError } from './errors.js';
import { webhookFields } from './webhook.js';

export const MAX_PROMPT = PARAMS.prompt.max_length;

// The text rules as regular expressions, so that the OpenAPI document states them exactly:
// the same source is the document's `pattern` and the API's check. Both dialects that read
// them (ECMAScript here, Python's in schemathesis) agree on these escapes.
/** Anything but C0 and C1 control characters and DEL; tab and line ends are allowed (multi-line prompts, CRLF from forms). */
const ALLOWED = String.raw`[^\x00-\x08\x0B\x0C\x0E-\x1F\x7F-\x9F]`;
/**
 * Neither a control character, nor white space as String.prototype.trim removes it, nor an
 * invisible format character (soft hyphen, zero-width space and joiners, word joiner, bidi marks).
 */
const VISIBLE = String.raw`[^\x00-\x20\x7F-\xA0\xAD\u1680\u180E\u2000-\u200F\u2028-\u202F\u205F-\u206F\u3000\uFEFF]`;
const TEXT = `^${ALLOWED}*$`;
const NOT_BLANK = `^${ALLOWED}*${VISIBLE}${ALLOWED}*$`;

/** Plain decimal notation: digits, then optionally a point and digits. No sign, exponent, hex, spaces or leading zeros. */
const DECIMAL = /^(?:0|[1-9][0-9]*)(?:\.[0-9]+)?$/;
const INTEGER = /^(?:0|[1-9][0-9]*)$/;

interface Range {
  minimum: number;
  maximum: number;
  exclusive_minimum?: boolean | undefined;
}

/**
 * The regular expression of the plain decimal numbers in a range, for the OpenAPI document and
 * the check alike. Built from whole-number limits (common/params.json has only those).
 */
export function rangePattern({ minimum, maximum, exclusive_minimum: exclusive }: Range, integer: boolean): string {
  if (![minimum, maximum].every(Number.isSafeInteger) || minimum < 0 || minimum >= maximum) {
    throw new Error(`a numeric range needs whole-number limits 0 <= minimum < maximum, got ${minimum}..${maximum}`);
  }
  const low = exclusive ? minimum + 1 : minimum;
  const parts = integer
    ? [toRegexRange(low, maximum)]
    : [
        ...(exclusive ? [String.raw`${minimum}\.[0-9]*[1-9][0-9]*`] : []), // just above the minimum
        ...(low < maximum ? [String.raw`${toRegexRange(low, maximum - 1)}(?:\.[0-9]+)?`] : []),
        String.raw`${maximum}(?:\.0+)?`,
      ];
  return `^(?:${parts.join('|')})$`;
}

const rangeText = ({ minimum, maximum, exclusive_minimum: exclusive }: Range) =>
  exclusive ? `more than ${minimum} and at most ${maximum}` : `from ${minimum} to ${maximum}`;

const PRIORITY_CODES: Record<string, Priority> = { '0': 'high', '1': 'normal', '2': 'low', high: 'high', normal: 'normal', low: 'low' };

/** Free text; the limits apply to the text as sent (in characters, as OpenAPI counts them), then it is trimmed. */
const text = (description: string, example: string | undefined, required: boolean) =>
  z
    .string({ error: 'must be given once, as text' })
    .refine((value) => [...value].length <= MAX_PROMPT, `must be at most ${MAX_PROMPT} characters`)
    .regex(new RegExp(TEXT), 'must not contain control characters (tab and newline are allowed)')
    .regex(new RegExp(required ? NOT_BLANK : TEXT), 'must not be empty or only white space and invisible characters')
    // Browsers send form text with CRLF line ends; the record keeps plain newlines.
    .overwrite((value) => value.replace(/\r\n?/g, '\n'))
    .trim()
    .openapi({ description, ...(example === undefined ? {} : { example }), pattern: required ? NOT_BLANK : TEXT, minLength: required ? 1 : 0, maxLength: MAX_PROMPT });

/**
 * A number sent as text, in plain decimal notation only: `0x10`, `1e1`, ` 5` and `Infinity`
 * are refused rather than read as numbers, and blank text is not 0. The OpenAPI document
 * states the rule as the pattern that checks it, the range included.
 */
function numeric(range: Range, options: { integer?: boolean; description: string; default?: number }) {
  const pattern = rangePattern(range, options.integer ?? false);
  // The same range for programs (the web page's inputs): what the pattern says, as numbers.
  const number = {
    minimum: range.minimum,
    maximum: range.maximum,
    ...(range.exclusive_minimum ? { exclusiveMinimum: true } : {}),
    integer: options.integer ?? false,
    ...(options.default === undefined ? {} : { default: options.default }),
  };
  const notation = options.integer ? 'a whole number in plain digits, such as 12' : 'a number in plain decimal notation, such as 0.6';
  return z
    .string({ error: 'must be given once, as text' })
    .regex(options.integer ? INTEGER : DECIMAL, `must be ${notation}`)
    .regex(new RegExp(pattern), `must be ${rangeText(range)}`)
    .transform(Number)
    .openapi({ description: options.description, pattern, 'x-number': number });
}

/**
 * The fields shared by the query string and the multipart body; every one is optional in each
 * source. Only model_name, prompt and priority carry an example: Swagger UI's Try it out fills
 * and sends every example, and the parameters' right values depend on the model (a family may
 * not take a negative prompt or a guidance scale) and a fixed seed would repeat one image.
 */
export function submissionFields(models: readonly string[]) {
  const known = models.join(', ');
  const { strength, steps, guidance_scale: guidance, seed, preview_every: previewEvery } = PARAMS;
  return z.object({
    model_name: z
      .enum(models as [string, ...string[]], { error: `must be one of the known models: ${known}` })
      .optional()
      .openapi({ description: `A model listed in model_names.txt (${known})`, example: models[0] }),
    prompt: text(
      `What the image should become: up to ${MAX_PROMPT} characters, not blank; no control characters but tab and newline`,
      'a watercolour lighthouse at dusk',
      true,
    ).optional(),
    priority: z
      .enum(['high', 'normal', 'low', '0', '1', '2'], { error: 'must be one of high, normal, low (or 0, 1, 2)' })
      .transform((value) => PRIORITY_CODES[value] as Priority)
      .optional()
      .openapi({ description: 'Queue priority; 0=high, 1=normal, 2=low. Default normal', example: 'normal', default: 'normal' }),
    negative_prompt: text('What the image should not show (for example "blurry"); empty means none', undefined, false).optional(),
    strength: numeric(strength, {
      description:
        `How far to move from the input image, ${rangeText(strength)}; plain decimal notation. Default ${strength.default}. ` +
        `floor(steps × strength) denoising steps run, and at least ${PARAMS.denoising_steps.minimum} must`,
      default: strength.default,
    }).optional(),
    steps: numeric(steps, {
      integer: true,
      description: `Denoising steps, ${rangeText(steps)}. Default ${steps.default}, or the model’s own`,
      default: steps.default,
    }).optional(),
    guidance_scale: numeric(guidance, {
      description: `Classifier-free guidance, ${rangeText(guidance)}; plain decimal notation. Default ${guidance.default}`,
      default: guidance.default,
    }).optional(),
    seed: numeric(seed, {
      integer: true,
      description: `Random seed, ${rangeText(seed)}; random when absent, and recorded in the job (the same seed and parameters repeat an image)`,
    }).optional(),
    start_by: z
      .string({ error: 'must be given once, as text' })
      .regex(new RegExp(START_BY_PATTERN), 'must be seconds from now (1 to 604800) or an RFC 3339 time with its offset, such as 2026-12-07T18:00:00Z')
      .optional()
      .openapi({
        description:
          'A start deadline: seconds from acceptance, or an RFC 3339 time with its offset. A job not started by then ends `aborted` without reaching a GPU (no GPU time spent); a time already past answers 422 deadline_passed. None by default',
        pattern: START_BY_PATTERN,
      }),
    preview_every: numeric(previewEvery, {
      integer: true,
      description:
        `Live previews: a small image of the job’s latents every this many denoising steps on its event stream (\`preview\` events), ${rangeText(previewEvery)}; 0: none. ` +
        'For the families whose latents have a known projection to colours (sd, sdxl, lcm); another model refuses it (422 invalid_for_model)',
    }).optional(),
    ...webhookFields(),
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
  preview_every: number;
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

export function toSubmission(fields: SubmissionFields, rulesOf: (model: string) => ModelRules): Submission {
  const { model_name, prompt } = fields;
  if (!model_name) throw new ValidationError('model_name', 'model_name is required (a query parameter or a form field)');
  if (!prompt) throw new ValidationError('prompt', `prompt is required: 1..${MAX_PROMPT} characters after trimming`);
  const rules = rulesOf(model_name);
  checkModelRules(fields, model_name, rules);
  const defaults = defaultsFor(rules);
  const strength = fields.strength ?? defaults.strength;
  const steps = fields.steps ?? defaults.steps;
  checkDenoising(rules, steps, strength, fields.steps === undefined ? 'strength' : fields.strength === undefined ? 'steps' : 'strength');
  return {
    model_name,
    priority: fields.priority ?? 'normal',
    prompt,
    negative_prompt: fields.negative_prompt || null,
    strength,
    steps,
    guidance_scale: fields.guidance_scale ?? defaults.guidance_scale,
    seed: fields.seed ?? null,
    preview_every: fields.preview_every ?? 0,
  };
}

/** A field the model's family does not take is refused, as is a value outside the model's own range. */
function checkModelRules(fields: SubmissionFields, model: string, rules: ModelRules): void {
  const whose = `model ${model}${rules.family ? ` (family ${rules.family})` : ''}`;
  for (const field of OPTIONAL_FIELDS) {
    const given = fields[field];
    if (!rules.applies[field] && given !== undefined && given !== '') throw new ModelParamError(field, `${field}: does not apply to ${whose}`);
  }
  for (const field of ['strength', 'steps', 'guidance_scale'] as const) {
    const value = fields[field];
    if (value !== undefined && !inRange(value, rules[field])) throw new ModelParamError(field, `${field}: ${whose} takes values ${rangeText(rules[field])}`);
  }
}

const inRange = (value: number, range: RangeWithDefault) =>
  (range.exclusive_minimum ? value > range.minimum : value >= range.minimum) && value <= range.maximum;

/** The runner refuses a job whose step rule gives too few denoising steps (floor(steps × strength) for most families). */
function checkDenoising(rules: ModelRules, steps: number, strength: number, field: 'steps' | 'strength'): void {
  const { minimum } = PARAMS.denoising_steps;
  const runs = denoisingSteps(rules, steps, strength);
  if (runs >= minimum) return;
  throw new ValidationError(
    field,
    `${field}: steps × strength must give at least ${minimum} denoising step; steps=${steps} and strength=${strength} give ${runs}`,
  );
}

/** Identifies "the same request" for Idempotency-Key: every field (before defaults are drawn) and the image bytes. */
export function requestHash(submission: Submission, imageSha256: string, webhook: unknown = null): string {
  const { model_name, priority, prompt, negative_prompt, strength, steps, guidance_scale, seed, preview_every } = submission;
  // The webhook and previews count only when asked for, so hashes of requests without them stay as they were.
  const parts = [model_name, priority, prompt, negative_prompt, strength, steps, guidance_scale, seed, imageSha256, ...(preview_every ? [{ preview_every }] : [])];
  const canonical = JSON.stringify(webhook ? [...parts, webhook] : parts);
  return createHash('sha256').update(canonical).digest('hex');
}
