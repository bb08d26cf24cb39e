// Job records in the real MinIO: create once, compare-and-swap updates.
import { describe, expect, it } from 'vitest';
import { newJobId, type JobRecord } from '../../common/jobs.js';
import { queued } from '../../common/lifecycle.js';
import { RecordConflict, RecordStore } from '../../common/records.js';
import { jobKeys, ObjectStore } from '../../common/storage.js';
import { testConfig } from '../helpers/env.js';

const config = testConfig();
const store = new ObjectStore(config);
const records = new RecordStore(store);

function record(id = newJobId()): JobRecord {
  const params = { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 };
  return queued({ id, model_name: 'tiny', priority: 'normal', params, width: 64, height: 64, input_key: jobKeys(id).input, idempotency: null }).record;
}

describe('RecordStore', () => {
  it('creates a record once', async () => {
    await store.ensureBucket();
    const first = record();
    await records.create(first);
    await expect(records.create(first)).rejects.toBeInstanceOf(RecordConflict);
    expect(await records.get(first.id)).toEqual(first);
  });

  it('serialises concurrent updates without losing one', async () => {
    const first = record();
    await records.create(first);
    await Promise.all(
      Array.from({ length: 8 }, () => records.update(first.id, (r) => ({ ...r, attempts: r.attempts + 1 }))),
    );
    expect((await records.get(first.id))?.attempts).toBe(8);
  });

  it('answers undefined for an unknown job', async () => {
    expect(await records.get(newJobId())).toBeUndefined();
    expect(await records.update(newJobId(), (r) => r)).toBeUndefined();
  });
});
