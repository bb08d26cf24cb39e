// Job parameter limits and defaults from common/params.json, the one file the API, its
// OpenAPI document and the Python runner all read.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { JobParams } from './jobs.js';

const Range = z.object({ minimum: z.number(), exclusive_minimum: z.boolean().optional(), maximum: z.number() });
const Text = z.object({ min_length: z.number().int().optional(), max_length: z.number().int() });
const side = z.number().int().positive();
const Image = z.object({ min_side: side, compute_min_side: side, max_side: side, max_pixels: side });

const OwnRange = z.object({ minimum: z.number().optional(), maximum: z.number().optional(), default: z.number().optional() });
const STEPS_RULES = ['times_strength', 'flow', 'all'] as const;
const Family = z.object({
  $comment: z.string().optional(),
  /** diffusers pipeline classes (a model folder's model_index.json _class_name) of the family. */
  pipelines: z.array(z.string()),
  steps_rule: z.enum(STEPS_RULES),
  /** Sides are computed at multiples of it. */
  multiple: z.number().int().positive(),
  prompt_tokens: z.number().int().positive(),
  dtype: z.enum(['float16', 'bfloat16', 'float32']),
  // null: the field does not apply to the family.
  negative_prompt: z.null().optional(),
  strength: OwnRange.nullable().optional(),
  steps: OwnRange.optional(),
  guidance_scale: OwnRange.nullable().optional(),
  preview_every: z.null().optional(),
});
const NotApplied = z.object({ negative_prompt: z.null(), strength: z.number(), guidance_scale: z.number(), preview_every: z.number() });

const ParamsFile = z.object({
  prompt: Text,
  negative_prompt: Text,
  strength: Range.extend({ default: z.number() }),
  steps: Range.extend({ default: z.number().int() }),
  /** floor(steps * strength) steps run; fewer than this cannot. */
  denoising_steps: z.object({ minimum: z.number().int() }),
  guidance_scale: Range.extend({ default: z.number() }),
  seed: Range,
  /** A preview every this many steps while the job runs; 0: none. */
  preview_every: Range.extend({ default: z.number().int() }),
  image: Image,
  families: z
    .record(z.string(), z.unknown())
    .transform((entries) => ({
      notApplied: NotApplied.parse(entries.not_applied),
      byName: Object.fromEntries(
        Object.entries(entries)
          .filter(([name]) => name !== '$comment' && name !== 'not_applied')
          .map(([name, entry]) => [name, Family.parse(entry)]),
      ),
    })),
  /** Per model, what differs from the general values (the toy model needs fewer steps and smaller images). */
  model_defaults: z.record(z.string(), z.object({ family: z.string().optional(), steps: z.number().int().optional(), image: Image.partial().optional() })),
});
export type ParamLimits = z.infer<typeof ParamsFile>;
export type FamilyEntry = z.infer<typeof Family>;
export type StepsRule = (typeof STEPS_RULES)[number];
export type ImageLimits = z.infer<typeof Image>;

export const PARAMS: ParamLimits = ParamsFile.parse(JSON.parse(readFileSync(new URL('./params.json', import.meta.url), 'utf8')));
export const FAMILIES: Readonly<Record<string, FamilyEntry>> = PARAMS.families.byName;
/** The fields that some families do not take, and the value a job of such a family records for each. */
export const NOT_APPLIED = PARAMS.families.notApplied;
export type OptionalField = keyof typeof NOT_APPLIED;
export const OPTIONAL_FIELDS = Object.keys(NOT_APPLIED) as OptionalField[];

export interface RangeWithDefault {
  minimum: number;
  maximum: number;
  exclusive_minimum?: boolean | undefined;
  default: number;
}

/** What one model takes: its family's rules over the general ones, with the model's own over both. */
export interface ModelRules {
  /** null: unknown here (a folder the API cannot read): the general rules, and the runner checks its own. */
  family: string | null;
  applies: Record<OptionalField, boolean>;
  strength: RangeWithDefault;
  steps: RangeWithDefault;
  guidance_scale: RangeWithDefault;
  steps_rule: StepsRule;
  multiple: number;
  prompt_tokens: number | null;
}

export function rulesFor(model: string, family: string | null): ModelRules {
  const own = family === null ? undefined : FAMILIES[family];
  if (family !== null && !own) throw new Error(`unknown model family "${family}" (one of ${Object.keys(FAMILIES).join(', ')})`);
  const range = (key: 'strength' | 'steps' | 'guidance_scale') => ({ ...PARAMS[key], ...own?.[key] });
  const steps = range('steps');
  return {
    family,
    applies: Object.fromEntries(OPTIONAL_FIELDS.map((key) => [key, own?.[key] !== null])) as Record<OptionalField, boolean>,
    strength: range('strength'),
    steps: { ...steps, default: PARAMS.model_defaults[model]?.steps ?? steps.default },
    guidance_scale: range('guidance_scale'),
    steps_rule: own?.steps_rule ?? 'times_strength',
    multiple: own?.multiple ?? 8,
    prompt_tokens: own?.prompt_tokens ?? null,
  };
}

/** The image limits of a model: the general ones, with the model's own in their place. */
export const imageLimitsFor = (model: string): ImageLimits => ({ ...PARAMS.image, ...PARAMS.model_defaults[model]?.image });

/**
 * The size the runner computes at: a side under compute_min_side is enlarged to it, on the
 * 8-pixel grid and keeping the aspect (the result is shrunk back). Same arithmetic as
 * diffusion-py/img2img_runner/jobs.py.
 */
export function computeSize(width: number, height: number, limits: ImageLimits, multiple = 8): { width: number; height: number } {
  const shortest = Math.min(width, height);
  const scale = shortest >= limits.compute_min_side ? 1 : limits.compute_min_side / shortest;
  const enlarge = (value: number) => (scale === 1 ? value : Math.ceil((value * scale) / 8) * 8);
  // Then to the nearest multiple of the family's grid (Python's round: halves to even), at least one.
  const onGrid = (value: number) => Math.max(multiple, roundHalfEven(value / multiple) * multiple);
  return { width: onGrid(enlarge(width)), height: onGrid(enlarge(height)) };
}

const roundHalfEven = (value: number) => {
  const floor = Math.floor(value);
  const rest = value - floor;
  return rest > 0.5 || (rest === 0.5 && floor % 2 === 1) ? floor + 1 : floor;
};

/** The denoising steps a job runs, by its family's rule (diffusers' get_timesteps of each scheduler kind). */
export function denoisingSteps(rules: Pick<ModelRules, 'steps_rule' | 'applies'>, steps: number, strength: number): number {
  if (!rules.applies.strength || rules.steps_rule === 'all') return steps;
  // The arithmetic of diffusers' get_timesteps, float for float.
  return rules.steps_rule === 'flow' ? steps - Math.trunc(Math.max(steps - Math.min(steps * strength, steps), 0)) : Math.floor(steps * strength);
}

/** The defaults of the numeric parameters for a model (the seed has none: it is drawn); a field that does not apply records NOT_APPLIED's value. */
export function defaultsFor(rules: ModelRules): Pick<JobParams, 'strength' | 'steps' | 'guidance_scale'> {
  return {
    strength: rules.applies.strength ? rules.strength.default : NOT_APPLIED.strength,
    steps: rules.steps.default,
    guidance_scale: rules.guidance_scale.default === undefined || !rules.applies.guidance_scale ? NOT_APPLIED.guidance_scale : rules.guidance_scale.default,
  };
}
