// Each model's rules come from its family (common/params.json): the fields that apply, their
// ranges and defaults, the step rule and the grid; the API refuses what the model does not take.
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ModelParamError } from '../../api/errors.js';
import { submissionFields, toSubmission, type SubmissionFields } from '../../api/submission.js';
import { familyOf, parseModelNames } from '../../common/models.js';
import { computeSize, defaultsFor, denoisingSteps, FAMILIES, PARAMS, rulesFor } from '../../common/params.js';

const MODELS = ['tiny', 'flux-dev', 'kontext', 'schnell', 'qwen', 'unknown'];
const FAMILY_OF: Record<string, string | null> = { tiny: 'sd', 'flux-dev': 'flux', kontext: 'flux-kontext', schnell: 'flux-schnell', qwen: 'qwen-image', unknown: null };
const rulesOf = (model: string) => rulesFor(model, FAMILY_OF[model]!);
const schema = submissionFields(MODELS);
const submit = (input: Record<string, unknown>) => toSubmission(schema.parse({ prompt: 'p', ...input }) as SubmissionFields, rulesOf);

/** A diffusers folder holding only what familyOf reads. */
function folder(pipeline: string, transformer?: Record<string, unknown>): string {
  const dir = mkdtempSync(join(tmpdir(), 'model-'));
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ _class_name: pipeline, _diffusers_version: '0.42.1' }));
  if (transformer) {
    mkdirSync(join(dir, 'transformer'));
    writeFileSync(join(dir, 'transformer', 'config.json'), JSON.stringify(transformer));
  }
  return dir;
}

describe('model families', () => {
  it('finds a model’s family from model_names.txt, a built-in, or its folder’s pipeline class', () => {
    const flux = folder('FluxImg2ImgPipeline', { guidance_embeds: true });
    const schnell = folder('FluxPipeline', { guidance_embeds: false });
    const edit = folder('QwenImageEditPlusPipeline');
    const kandinsky = folder('KandinskyV22Img2ImgPipeline');
    const entries = parseModelNames(
      ['tiny', `dev ${flux}`, `fast ${schnell}`, `edit ${edit}`, `k ${kandinsky}`, 'hub org/repo family=sd3', 'arch sdxl-arch', 'gone /nowhere'].join('\n'),
    );
    expect(entries.map(familyOf)).toEqual(['sd', 'flux', 'flux-schnell', 'qwen-image-edit', null, 'sd3', 'sdxl', null]);
    expect(() => parseModelNames('m /x family=dalle')).toThrow(/family "dalle" must be one of/);
    expect(() => parseModelNames('m /x dtype=int4')).toThrow(/dtype "int4" must be one of/);
    expect(parseModelNames('m /x dtype=bfloat16')[0]!.dtype).toBe('bfloat16');
  });

  it('refuses with 422 a field the model does not take, naming the field and the model', () => {
    const refusal = (input: Record<string, unknown>) => {
      try {
        submit(input);
      } catch (error) {
        return error;
      }
      throw new Error('accepted');
    };
    expect(refusal({ model_name: 'flux-dev', negative_prompt: 'blurry' })).toMatchObject({
      status: 422,
      code: 'invalid_for_model',
      field: 'negative_prompt',
      message: 'negative_prompt: does not apply to model flux-dev (family flux)',
    });
    expect(refusal({ model_name: 'kontext', strength: '0.5' })).toMatchObject({ field: 'strength' });
    expect(refusal({ model_name: 'schnell', guidance_scale: '3.5' })).toMatchObject({ field: 'guidance_scale' });
    expect(refusal({ model_name: 'schnell', steps: '60' })).toMatchObject({ field: 'steps', message: expect.stringMatching(/from 1 to 50/) });
    expect(refusal({ model_name: 'flux-dev', guidance_scale: '25' })).toBeInstanceOf(ModelParamError);
    // The general rules where the family is unknown, and for the families that take everything.
    expect(submit({ model_name: 'unknown', negative_prompt: 'blurry', guidance_scale: '25' }).guidance_scale).toBe(25);
    expect(submit({ model_name: 'qwen', negative_prompt: 'blurry' }).negative_prompt).toBe('blurry');
  });

  it('fills each model’s own defaults, and the neutral value of a field that does not apply', () => {
    expect(submit({ model_name: 'flux-dev' })).toMatchObject({ steps: 28, strength: PARAMS.strength.default, guidance_scale: 3.5, negative_prompt: null });
    expect(submit({ model_name: 'kontext' })).toMatchObject({ strength: 1, guidance_scale: 2.5 });
    expect(submit({ model_name: 'schnell' })).toMatchObject({ steps: 4, guidance_scale: 0 });
    expect(defaultsFor(rulesFor('tiny', 'sd')).steps).toBe(10); // tiny's own over its family's
  });

  it('counts the denoising steps by the family’s rule, and refuses a job with none', () => {
    expect(denoisingSteps(rulesFor('m', 'sd'), 10, 0.25)).toBe(2); // floor(10 × 0.25)
    expect(denoisingSteps(rulesFor('m', 'flux'), 10, 0.25)).toBe(3); // 10 − int(10 − 2.5)
    expect(denoisingSteps(rulesFor('m', 'lcm'), 4, 0.25)).toBe(4);
    expect(denoisingSteps(rulesFor('m', 'flux-kontext'), 28, 1)).toBe(28);
    expect(() => submit({ model_name: 'tiny', steps: '4', strength: '0.2' })).toThrow(/give 0/);
    expect(submit({ model_name: 'flux-dev', steps: '4', strength: '0.2' }).steps).toBe(4); // a flow model runs at least one step
  });

  it('computes sides on the family’s grid, as the runner does', () => {
    const limits = PARAMS.image;
    expect(computeSize(96, 64, limits)).toEqual({ width: 96, height: 64 });
    // To the nearest multiple, halves to even as Python's round(): 200/16 = 12.5 → 12, 120/16 = 7.5 → 8.
    expect(computeSize(200, 120, limits, 16)).toEqual({ width: 192, height: 128 });
    expect(computeSize(8, 40, limits, 16)).toEqual({ width: 64, height: 320 }); // enlarged to 64 first
  });

  it('has rules for every family the runner serves', () => {
    expect(Object.keys(FAMILIES).sort()).toEqual(['flux', 'flux-kontext', 'flux-schnell', 'lcm', 'qwen-image', 'qwen-image-edit', 'sd', 'sd3', 'sdxl', 'z-image']);
  });
});
