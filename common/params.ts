// Job parameter limits and defaults from common/params.json, the one file the API, its
// OpenAPI document and the Python runner all read.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { JobParams } from './jobs.js';

const Range = z.object({ minimum: z.number(), maximum: z.number() });
const Text = z.object({ min_length: z.number().int().optional(), max_length: z.number().int() });

const ParamsFile = z.object({
  prompt: Text,
  negative_prompt: Text,
  strength: Range.extend({ default: z.number() }),
  steps: Range.extend({ default: z.number().int() }),
  guidance_scale: Range.extend({ default: z.number() }),
  seed: Range,
  /** Per model, defaults that differ from the general ones (the toy model needs fewer steps). */
  model_defaults: z.record(z.string(), z.object({ steps: z.number().int().optional() })),
});
export type ParamLimits = z.infer<typeof ParamsFile>;

export const PARAMS: ParamLimits = ParamsFile.parse(JSON.parse(readFileSync(new URL('./params.json', import.meta.url), 'utf8')));

/** The defaults of the numeric parameters for a model (the seed has none: it is drawn). */
export function defaultsFor(model: string): Pick<JobParams, 'strength' | 'steps' | 'guidance_scale'> {
  return {
    strength: PARAMS.strength.default,
    steps: PARAMS.model_defaults[model]?.steps ?? PARAMS.steps.default,
    guidance_scale: PARAMS.guidance_scale.default,
  };
}
