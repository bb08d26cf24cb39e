// Job-list entries of the layout before folders (`list/<tenant>/<position>-<model>`) are moved
// into their folders and everyone's list at the API's start, or deleted when their job is gone;
// real MinIO, the old entries written directly as the earlier layout left them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { moveFlatEntries, MOVED_MARKER } from '../../api/listlayout.js';
import { ALL_TENANTS, endedList, listEntries, tenantList } from '../../common/joblist.js';
import { newJobId, type JobRecord } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';
import { RecordStore } from '../../common/records.js';
import { jobKeys, ObjectStore } from '../../common/storage.js';
import { testConfig, uniqueName } from '../helpers/env.js';

const params = { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 };
const store = new ObjectStore(testConfig({ S3_BUCKET: uniqueName('listlayout') }));
const records = new RecordStore(store);

/** A job of `tenant` created `minutesAgo`, its record written unless `stored` is false, with its entries in the old layout. */
async function oldJob(tenant: string, minutesAgo: number, status: JobRecord['status'], stored = true): Promise<string> {
  const id = newJobId();
  const now = new Date(Date.now() - minutesAgo * 60_000);
  const queued = lifecycle.queued({ id, model_name: 'tiny', priority: 'normal', params, width: 64, height: 64, input_key: jobKeys(id).input, idempotency: null }, { now }).record;
  const record: JobRecord = { ...queued, tenant, status };
  if (stored) await records.create(record);
  const name = `${String(10 ** 13 - now.getTime()).padStart(13, '0')}-${id}-tiny`;
  await store.put(`${tenantList(tenant)}${name}`, id, 'text/plain');
  if (status === 'succeeded') await store.put(`${endedList(tenant, 'succeeded')}${name}`, id, 'text/plain');
  return id;
}

const ids = async (list: string) => (await listEntries(store, list, 50, undefined)).entries.map((entry) => entry.id);
const flatKeys = async (folder: string) => (await store.listPage(folder, { delimiter: '/' })).keys;

beforeAll(() => store.ensureBucket());
afterAll(() => store.close());

describe('moving job-list entries of the old layout', () => {
  it('moves live jobs into their folders and everyone\'s list, newest first, drops the rest, once', async () => {
    const older = await oldJob('alice', 30, 'succeeded');
    const newer = await oldJob('alice', 5, 'queued');
    const bobs = await oldJob('bob', 10, 'running');
    await oldJob('alice', 20, 'queued', false); // its record never written: its entry goes
    await oldJob('bob', 40, 'expired');

    expect(await moveFlatEntries(store, records)).toBe(6); // five list entries, one ending entry

    expect(await ids(tenantList('alice'))).toEqual([newer, older]);
    expect(await ids(tenantList('bob'))).toEqual([bobs]);
    expect(await ids(tenantList(ALL_TENANTS))).toEqual([newer, bobs, older]);
    expect(await ids(endedList('alice', 'succeeded'))).toEqual([older]);
    expect(await ids(endedList(ALL_TENANTS, 'succeeded'))).toEqual([older]);
    for (const folder of [tenantList('alice'), tenantList('bob'), endedList('alice', 'succeeded')]) expect(await flatKeys(folder)).toEqual([]);
    expect(await store.get(MOVED_MARKER)).toBeDefined();

    // Done once: a later start reads the marker and moves nothing, even an entry of the old layout.
    await oldJob('carol', 1, 'queued');
    expect(await moveFlatEntries(store, records)).toBe(0);
    expect(await flatKeys(tenantList('carol'))).toHaveLength(1);
  });
});
