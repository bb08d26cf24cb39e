// The API killed while uploads are in flight: inputs stored for jobs that
// never got a record are swept within minutes, and no input of a real job is touched.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newJobId } from '../../common/jobs.js';
import { ObjectStore, jobKeys } from '../../common/storage.js';
import { dueKey } from '../../api/sweeper.js';
import { pngImage } from '../helpers/api.js';
import { uniqueName } from '../helpers/env.js';
import { testConfig } from '../helpers/env.js';
import { report, sleep } from '../helpers/faults.js';
import { startApiProcess, type ApiProcess } from '../helpers/processes.js';
import { waitFor } from '../helpers/consumer.js';

// A bucket of its own: the sweep runs over all of it, with a grace far below production's.
const config = testConfig({ S3_BUCKET: uniqueName('orphans') });
const store = new ObjectStore(config);
const env = { TOPIC_PREFIX: config.TOPIC_PREFIX, S3_BUCKET: config.S3_BUCKET, SWEEP_INTERVAL_MS: '1000', ORPHAN_GRACE_MS: '5000' };
let api: ApiProcess | undefined;

async function inventory(): Promise<{ inputs: Set<string>; records: Set<string> }> {
  const inputs = new Set<string>();
  const records = new Set<string>();
  for await (const { key } of store.list('jobs/')) {
    const [, id, name] = key.split('/');
    if (name === 'input.png') inputs.add(id!);
    if (name === 'job.json') records.add(id!);
  }
  return { inputs, records };
}
const orphansOf = ({ inputs, records }: { inputs: Set<string>; records: Set<string> }) => [...inputs].filter((id) => !records.has(id));

beforeAll(async () => {
  await store.ensureBucket();
}, 60_000);
afterAll(async () => {
  await api?.service.stop('SIGKILL');
});

describe('the API killed mid-intake', () => {
  it('leaves orphan inputs that a later API sweeps, and only those', async () => {
    // Sweeping off while the crash is staged, so the count before the sweep is what the crash left.
    api = await startApiProcess({ ...env, SWEEP_INTERVAL_MS: '0' });
    const image = await pngImage(64, 64);
    let accepted = 0;
    let submitted = 0;
    const send = async () => {
      submitted++;
      const form = new FormData();
      form.append('image', new Blob([new Uint8Array(image)], { type: 'image/png' }), 'in.png');
      const response = await fetch(`${api!.url}/api/diffusion?model_name=tiny&prompt=crash`, { method: 'POST', body: form }).catch(() => undefined);
      if (response?.status === 202) accepted++;
      await response?.body?.cancel();
    };
    const clients = Array.from({ length: 12 }, async () => {
      for (let i = 0; i < 15; i++) await send();
    });
    await sleep(1500);
    await api.service.stop('SIGKILL');
    await Promise.all(clients);
    // One orphan for sure, whatever the crash caught: an input as the dying API leaves it, its
    // sweep entry written first (and due already: the grace has passed).
    const planted = newJobId();
    await store.put(dueKey(Date.now() - 1, planted), '{}', 'application/json');
    await store.put(jobKeys(planted).input, image, 'image/png');

    const before = await inventory();
    const orphans = orphansOf(before);
    expect(orphans).toContain(planted);

    api = await startApiProcess(env);
    const young = newJobId(); // within the grace period: its intake could still be running
    await store.put(jobKeys(young).input, image, 'image/png');
    const after = await waitFor(async () => {
      const now = await inventory();
      return orphans.every((id) => !now.inputs.has(id)) ? now : undefined;
    }, 30_000, 'the orphans to be swept');
    report('API killed mid-intake', { submitted, accepted, succeeded: 0, lost: 0, duplicated: 0 }, {
      orphans_left_by_the_crash: orphans.length - 1,
      orphans_after_sweep: orphansOf(after).filter((id) => id !== young).length,
    });
    for (const id of before.records) expect(after.inputs.has(id), `input of job ${id}`).toBe(true);
    expect(after.inputs.has(young)).toBe(true);
  }, 120_000);
});
