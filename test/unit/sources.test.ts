// A model's source is checked on this machine's files before any job is taken for it.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readModelNames } from '../../common/models.js';
import { checkSource } from '../../common/sources.js';

const work = mkdtempSync(join(tmpdir(), 'sources-'));

/** A folder as pipeline.save_pretrained writes it: model_index.json and one folder per component. */
function pipelineFolder(name: string, pipeline: string, components: string[], missing: string[] = []): string {
  const folder = join(work, name);
  mkdirSync(folder, { recursive: true });
  const index: Record<string, unknown> = { _class_name: pipeline, _diffusers_version: '0.42.1', safety_checker: [null, null] };
  for (const component of components) {
    index[component] = ['diffusers', 'Whatever'];
    if (!missing.includes(component)) mkdirSync(join(folder, component), { recursive: true });
  }
  writeFileSync(join(folder, 'model_index.json'), JSON.stringify(index));
  return folder;
}

const reason = (check: ReturnType<typeof checkSource>) => (check.ok ? 'ok' : check.reason);

describe('checkSource', () => {
  it('passes the built-in model, the benchmark sources, stand-ins and a whole pipeline folder', () => {
    const folder = pipelineFolder('sd', 'StableDiffusionPipeline', ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler']);
    for (const entry of [{ name: 'tiny' }, { name: 'b', source: 'sdxl-arch' }, { name: 'c', source: 'standin:0.01' }, { name: 'd', source: folder }]) {
      expect(reason(checkSource(entry)), JSON.stringify(entry)).toBe('ok');
    }
  });

  it('names what is wrong with each kind of broken source', () => {
    const file = join(work, 'weights.safetensors');
    writeFileSync(file, 'x');
    const empty = join(work, 'empty');
    mkdirSync(empty);
    const badJson = join(work, 'bad-json');
    mkdirSync(badJson);
    writeFileSync(join(badJson, 'model_index.json'), '{');
    const controlnet = pipelineFolder('controlnet', 'StableDiffusionControlNetPipeline', ['unet']);
    const halfCopied = pipelineFolder('half', 'StableDiffusionXLPipeline', ['unet', 'vae', 'text_encoder_2'], ['vae', 'text_encoder_2']);
    const flux = pipelineFolder('flux', 'FluxPipeline', ['transformer']);
    const cases: [Record<string, string>, string][] = [
      [{ name: 'sd15' }, 'model sd15 has no source: give a diffusers folder or a Hugging Face repo id in model_names.txt'],
      [{ name: 'm', source: join(work, 'gone') }, `model folder ${join(work, 'gone')} does not exist`],
      [{ name: 'm', source: file }, `${file} is a file, not a diffusers pipeline folder`],
      [{ name: 'm', source: empty }, `${empty} has no model_index.json: it is not a diffusers pipeline folder (one that pipeline.save_pretrained writes)`],
      [{ name: 'm', source: halfCopied }, `${halfCopied} lacks the component folders vae, text_encoder_2 that its model_index.json names`],
      [{ name: 'm', source: flux, family: 'sdxl' }, `model_names.txt says family=sdxl, but ${flux} holds a FluxPipeline (family flux)`],
    ];
    for (const [entry, expected] of cases) expect(reason(checkSource(entry as never)), JSON.stringify(entry)).toBe(expected);
    expect(reason(checkSource({ name: 'm', source: badJson }))).toMatch(/model_index.json cannot be read as JSON: /);
    expect(reason(checkSource({ name: 'm', source: controlnet }))).toMatch(/holds a StableDiffusionControlNetPipeline, which no family of the runner serves \(it serves .*FluxPipeline/);
  });

  it('finds a repo id in the Hugging Face cache only, and says where it looked', () => {
    const cache = join(work, 'hub');
    const env = { HF_HUB_CACHE: cache };
    expect(reason(checkSource({ name: 'm', source: 'org/absent' }, env))).toMatch(
      new RegExp(`^org/absent is neither a folder here \\(.*\\) nor a model in the Hugging Face cache \\(${cache}\\); nothing is downloaded from the hub`),
    );
    const snapshot = join(cache, 'models--org--present', 'snapshots', 'abc123');
    mkdirSync(snapshot, { recursive: true });
    writeFileSync(join(snapshot, 'model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionXLImg2ImgPipeline' }));
    expect(reason(checkSource({ name: 'm', source: 'org/present' }, env))).toBe('ok');
    expect(reason(checkSource({ name: 'm', source: 'org/present' }, { HF_HOME: join(work, 'elsewhere') }))).toMatch(/elsewhere\/hub/);
  });
});

describe('readModelNames', () => {
  it('resolves a relative folder against the file’s own folder; a relative name that is no folder stays a repo id', async () => {
    const dir = join(work, 'config');
    mkdirSync(join(dir, 'models', 'mine'), { recursive: true });
    writeFileSync(join(dir, 'model_names.txt'), 'tiny\nmine models/mine\nhub org/name\nlost ./models/lost\n');
    const entries = await readModelNames(join(dir, 'model_names.txt'));
    expect(entries.map((entry) => entry.source)).toEqual([undefined, join(dir, 'models', 'mine'), 'org/name', join(dir, 'models', 'lost')]);
  });
});
