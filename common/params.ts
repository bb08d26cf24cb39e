// Job parameter limits and defaults from common/params.json, the one file the API, its
// OpenAPI document and the Python runner all read.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { JobParams } from './jobs.js';

const Range = z.object({ minimum: z.number(), exclusive_minimum: z.boolean().optional(), maximum: z.number() });
const Text = z.object({ min_length: z.number().int().optional(), max_length: z.number().int() });
const side = z.number().int().positive();
const Image = z.object({ min_side: side, compute_min_side: side, max_side: side, max_pixels: side });

const ParamsFile = z.object({
  prompt: Text,
  negative_prompt: Text,
  strength: Range.extend({ default: z.number() }),
  steps: Range.extend({ default: z.number().int() }),
  /** floor(steps * strength) steps run; fewer than this cannot. */
  denoising_steps: z.object({ minimum: z.number().int() }),
  guidance_scale: Range.extend({ default: z.number() }),
  seed: Range,
  image: Image,
  /** Per model, what differs from the general values (the toy model needs fewer steps and smaller images). */
  model_defaults: z.record(z.string(), z.object({ steps: z.number().int().optional(), image: Image.partial().optional() })),
});
export type ParamLimits = z.infer<typeof ParamsFile>;
export type ImageLimits = z.infer<typeof Image>;

export const PARAMS: ParamLimits = ParamsFile.parse(JSON.parse(readFileSync(new URL('./params.json', import.meta.url), 'utf8')));

/** The image limits of a model: the general ones, with the model's own in their place. */
export const imageLimitsFor = (model: string): ImageLimits => ({ ...PARAMS.image, ...PARAMS.model_defaults[model]?.image });

/**
 * The size the runner computes at: a side under compute_min_side is enlarged to it, on the
 * 8-pixel grid and keeping the aspect (the result is shrunk back). Same arithmetic as
 * diffusion-py/img2img_runner/jobs.py.
 */
export function computeSize(width: number, height: number, limits: ImageLimits): { width: number; height: number } {
  const shortest = Math.min(width, height);
  if (shortest >= limits.compute_min_side) return { width, height };
  const scale = limits.compute_min_side / shortest;
  const grid = (value: number) => Math.ceil((value * scale) / 8) * 8;
  return { width: grid(width), height: grid(height) };
}

/** The denoising steps a job runs (diffusers' get_timesteps: int(steps * strength)). */
export const denoisingSteps = (steps: number, strength: number) => Math.floor(steps * strength);

/** The defaults of the numeric parameters for a model (the seed has none: it is drawn). */
export function defaultsFor(model: string): Pick<JobParams, 'strength' | 'steps' | 'guidance_scale'> {
  return {
    strength: PARAMS.strength.default,
    steps: PARAMS.model_defaults[model]?.steps ?? PARAMS.steps.default,
    guidance_scale: PARAMS.guidance_scale.default,
  };
}
