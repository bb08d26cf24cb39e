// A model whose source cannot be served is caught when the consumer starts: the consumer names
// the reason, serves the others, and the API refuses that model's jobs with it; a runner that
// cannot load what passed the check puts its own reason into the job's error.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RecordStore } from '../../common/records.js';
import { ObjectStore } from '../../common/storage.js';
import { jobTopic, PRIORITIES } from '../../common/topics.js';
import { json, pngImage, postJob, startTestApi, topicSize, type TestApi } from '../helpers/api.js';
import { ConsumerProcess, waitFor, waitForStatus } from '../helpers/consumer.js';
import { testConfig } from '../helpers/env.js';
import { modelNamesFile } from '../helpers/processes.js';

const work = mkdtempSync(join(tmpdir(), 'model-sources-'));
const tag = Math.random().toString(36).slice(2, 8);
const names = { missing: `missing-${tag}`, loadFails: `loadfails-${tag}` };
const gone = join(work, 'gone');
// A pipeline folder as the check sees it (model_index.json, a folder per component) whose UNet
// folder holds no config: diffusers cannot load it.
const unloadable = join(work, 'unloadable');
mkdirSync(join(unloadable, 'unet'), { recursive: true });
writeFileSync(join(unloadable, 'model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionImg2ImgPipeline', unet: ['diffusers', 'UNet2DConditionModel'] }));
const lines = ['tiny', `${names.missing} ${gone}`, `${names.loadFails} ${unloadable}`];

const config = testConfig();
const store = new ObjectStore(config);
const records = new RecordStore(store);
const consumer = new ConsumerProcess({ TOPIC_PREFIX: config.TOPIC_PREFIX, MAX_ATTEMPTS: '1', IDLE_UNLOAD_MS: '0' }, `${lines.join('\n')}\n`);
let api: TestApi;

beforeAll(async () => {
  const started = Date.now();
  await consumer.start();
  await consumer.ready(90_000);
  api = await startTestApi({ TOPIC_PREFIX: config.TOPIC_PREFIX, MODEL_NAMES_FILE: modelNamesFile(lines) });
  console.log(`[model-sources] consumer and API up in ${Date.now() - started} ms`);
}, 120_000);

afterAll(async () => {
  await consumer.stop();
  await api?.close();
});

describe('model sources checked at start', () => {
  it('the consumer logs the reason at error level and serves the other models', async () => {
    expect(consumer.log).toContain(`model ${names.missing} cannot be served: model folder ${gone} does not exist`);
    expect(consumer.log).toMatch(/"level":50[^\n]*cannot be served/);
    const response = await postJob(api.url, { image: await pngImage(64, 64), query: { model_name: 'tiny', prompt: 'a fox' } });
    expect(response.status).toBe(202);
    expect((await waitForStatus(records, (await json(response)).id, ['succeeded', 'failed'], 90_000)).status).toBe('succeeded');
  }, 120_000);

  it('/api/models marks the model unavailable with the reason; a job for it answers 503 model_unavailable and is not enqueued', async () => {
    const { models } = await json(await fetch(`${api.url}/api/models`));
    const byName = Object.fromEntries(models.map((model: { name: string }) => [model.name, model]));
    expect(byName[names.missing]).toMatchObject({ available: false, unavailable_reason: `model folder ${gone} does not exist` });
    expect(byName.tiny).toMatchObject({ available: true, unavailable_reason: null });
    const response = await postJob(api.url, { image: await pngImage(64, 64), query: { model_name: names.missing, prompt: 'a fox' } });
    expect({ status: response.status, error: (await json(response)).error }).toEqual({
      status: 503,
      error: {
        code: 'model_unavailable',
        field: 'model_name',
        message: `model_name: model ${names.missing} is unavailable: model folder ${gone} does not exist`,
        request_id: expect.any(String),
      },
    });
    expect(response.headers.get('retry-after')).toBeNull();
    let queued = 0;
    for (const priority of PRIORITIES) queued += await topicSize(api.services.admin, jobTopic(config.TOPIC_PREFIX, names.missing, priority));
    expect(queued).toBe(0);
  });

  it('a runner that cannot load the model gives its reason in the job’s error', async () => {
    const response = await postJob(api.url, { image: await pngImage(64, 64), query: { model_name: names.loadFails, prompt: 'a fox' } });
    expect(response.status).toBe(202);
    const record = await waitForStatus(records, (await json(response)).id, ['succeeded', 'failed'], 90_000);
    expect(record.status).toBe('failed');
    expect(record.error?.code).toBe('runner_start_failed');
    expect(record.error?.message).toMatch(new RegExp(`exited during start-up \\(code 1, signal null\\): cannot load model ${names.loadFails}: \\w+Error: .+`));
    await waitFor(async () => (consumer.log.includes(`cannot load model ${names.loadFails}`) ? true : undefined), 5000, 'the reason in the consumer log');
  }, 120_000);
});
