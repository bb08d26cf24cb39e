// Job records in the real MinIO: create once, compare-and-swap updates, a record handed over
// (known by another process without a read).
import { describe, expect, it, vi } from 'vitest';
import { newJobId, type JobRecord } from '../../common/jobs.js';
import { cancel, queued, start } from '../../common/lifecycle.js';
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

describe('RecordStore.handOver: a record known from the message that announced it', () => {
  /** A second process's store (a consumer's), whose reads are counted. */
  function otherProcess() {
    const own = new ObjectStore(config);
    return { records: new RecordStore(own), reads: vi.spyOn(own, 'get') };
  }

  it('writes on the record as created without reading it: the ETag is the MD5 of its bytes', async () => {
    const created = { ...record(), queue: { topic: 't', partition: 1, offset: '42' } };
    await records.create(created);
    const consumer = otherProcess();
    expect(consumer.records.handOver(created)).toBe(true);
    const applied = await consumer.records.apply(created.id, (r) => start(r));
    expect(applied.event?.type).toBe('started');
    expect(consumer.reads).not.toHaveBeenCalled();
    expect(await records.get(created.id)).toMatchObject({ status: 'running', attempts: 1, queue: created.queue });
  });

  it('reads a record changed since, and the change holds', async () => {
    const created = record();
    await records.create(created);
    await records.apply(created.id, (r) => cancel(r));
    const consumer = otherProcess();
    expect(consumer.records.handOver(created)).toBe(true);
    const applied = await consumer.records.apply(created.id, (r) => start(r));
    expect(applied).toMatchObject({ record: { status: 'canceled' }, event: undefined });
    expect(consumer.reads).toHaveBeenCalledTimes(1);
    expect((await records.get(created.id))?.status).toBe('canceled');
  });

  it('writes nothing for a record not written yet', async () => {
    const created = record();
    const consumer = otherProcess();
    expect(consumer.records.handOver(created)).toBe(true);
    expect(await consumer.records.apply(created.id, (r) => start(r))).toEqual({ record: undefined, event: undefined });
    expect(await store.get(jobKeys(created.id).record)).toBeUndefined();
  });

  it('is refused for a record the process knows already', async () => {
    const created = record();
    await records.create(created);
    expect(records.handOver(created)).toBe(false);
  });
});
