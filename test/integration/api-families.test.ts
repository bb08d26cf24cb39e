// A model's family decides what a submission may hold: over HTTP, a field the model does not
// take answers 422 naming it and the model, nothing is enqueued, and /api/models says why.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PRIORITIES, jobTopic } from '../../common/topics.js';
import { json, pngImage, postJob, startTestApi, topicSize, type TestApi } from '../helpers/api.js';
import { modelNamesFile } from '../helpers/processes.js';

let api: TestApi;

/** A model folder with only the file the API reads (its pipeline class). */
function modelFolder(pipeline: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'model-'));
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ _class_name: pipeline }));
  return dir;
}

beforeAll(async () => {
  api = await startTestApi({
    MODEL_NAMES_FILE: modelNamesFile(['tiny', `flux-dev ${modelFolder('FluxImg2ImgPipeline')}`, `kontext ${modelFolder('FluxKontextPipeline')}`]),
  });
});

afterAll(async () => {
  await api?.close();
});

const enqueued = async (model: string) => {
  let total = 0;
  for (const priority of PRIORITIES) total += await topicSize(api.services.admin, jobTopic(api.config.TOPIC_PREFIX, model, priority));
  return total;
};

describe('per-model parameters over HTTP', () => {
  it('refuses what the model does not take with 422 naming the field and the model, and enqueues nothing', async () => {
    const image = await pngImage(64, 48);
    const cases: { query: Record<string, string>; field: string; message: string }[] = [
      { query: { model_name: 'flux-dev', negative_prompt: 'blurry' }, field: 'negative_prompt', message: 'negative_prompt: does not apply to model flux-dev (family flux)' },
      { query: { model_name: 'kontext', strength: '0.5' }, field: 'strength', message: 'strength: does not apply to model kontext (family flux-kontext)' },
      { query: { model_name: 'flux-dev', guidance_scale: '25' }, field: 'guidance_scale', message: 'guidance_scale: model flux-dev (family flux) takes values from 0 to 20' },
      { query: { model_name: 'flux-dev', preview_every: '5' }, field: 'preview_every', message: 'preview_every: does not apply to model flux-dev (family flux)' },
    ];
    for (const { query, field, message } of cases) {
      const response = await postJob(api.url, { image, query: { prompt: 'a lighthouse', ...query } });
      expect({ status: response.status, error: (await json(response)).error }).toEqual({ status: 422, error: { code: 'invalid_for_model', field, message, request_id: expect.any(String) } });
    }
    expect([await enqueued('flux-dev'), await enqueued('kontext')]).toEqual([0, 0]);
  });

  it('records the family’s defaults and the neutral value of a field that does not apply', async () => {
    const response = await postJob(api.url, { image: await pngImage(64, 48), query: { model_name: 'kontext', prompt: 'make it night' } });
    expect(response.status).toBe(202);
    const job = await json(await fetch(`${api.url}/api/jobs/${(await json(response)).id}`));
    expect(job.params).toMatchObject({ strength: 1, steps: 28, guidance_scale: 2.5, negative_prompt: null });
  });

  it('lists each model’s family and what it takes', async () => {
    const { models } = await json(await fetch(`${api.url}/api/models`));
    const byName = Object.fromEntries(models.map((model: { name: string }) => [model.name, model]));
    expect(byName.tiny).toMatchObject({ family: 'sd', params: { negative_prompt: { applies: true } }, denoising: { steps_rule: 'times_strength', multiple: 8 } });
    expect(byName['flux-dev']).toMatchObject({
      family: 'flux',
      params: { negative_prompt: { applies: false }, guidance_scale: { applies: true, maximum: 20, default: 3.5 } },
      denoising: { steps_rule: 'flow', multiple: 16 },
    });
    expect(byName.kontext.params.strength.applies).toBe(false);
  });
});
