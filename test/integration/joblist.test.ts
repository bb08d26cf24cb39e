// GET /api/jobs: each tenant lists its own jobs, newest first, a page at a time; an admin lists
// every tenant's (from the list of everyone's jobs, with the same filters and cursor); without
// keys there is no list. Against the real MinIO and Kafka.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addToList } from '../../common/joblist.js';
import { KeyStore } from '../../common/keys.js';
import * as lifecycle from '../../common/lifecycle.js';
import { ObjectStore } from '../../common/storage.js';
import { json, pngImage, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { uniqueName } from '../helpers/env.js';

const PEPPER = 'test-pepper-0123456789';
let api: TestApi;
let open: TestApi;
const tokens: Record<string, string> = {};
const submitted: Record<string, string[]> = { alice: [], bob: [] };

const bearer = (who: string) => ({ Authorization: `Bearer ${tokens[who]}` });
async function list(who: string | undefined, query: Record<string, string> = {}, on = api) {
  const response = await fetch(`${on.url}/api/jobs?${new URLSearchParams(query)}`, { headers: who ? bearer(who) : {} });
  return { status: response.status, body: await json(response) };
}
const ids = (body: Record<string, any>) => body.jobs.map((job: { id: string }) => job.id);
/** Every page from the first, following next_cursor. */
async function allPages(who: string, query: Record<string, string>): Promise<string[][]> {
  const pages: string[][] = [];
  let cursor: string | undefined;
  do {
    const { status, body } = await list(who, { ...query, ...(cursor ? { cursor } : {}) });
    expect(status).toBe(200);
    pages.push(ids(body));
    cursor = body.next_cursor ?? undefined;
  } while (cursor);
  return pages;
}

beforeAll(async () => {
  const bucket = uniqueName('joblist');
  api = await startTestApi({ AUTH: 'on', AUTH_PEPPER: PEPPER, S3_BUCKET: bucket });
  open = await startTestApi({ S3_BUCKET: bucket });
  const keys = new KeyStore(new ObjectStore(api.config), PEPPER);
  for (const [who, tenant, role] of [['alice', 'acme', 'user'], ['bob', 'globex', 'user'], ['root', 'ops', 'admin']] as const) {
    tokens[who] = (await keys.create({ tenant, name: who, role, limits: { rate: null, concurrency: null } })).token;
  }
  const image = await pngImage(64, 64);
  for (const [who, count] of [['alice', 5], ['bob', 2]] as const) {
    for (let n = 0; n < count; n++) {
      const response = await postJob(api.url, { image, query: { model_name: 'tiny', prompt: `${who} ${n}` }, headers: bearer(who) });
      expect(response.status).toBe(202);
      submitted[who]!.push((await json(response)).id);
      await new Promise((resolve) => setTimeout(resolve, 5)); // distinct acceptance times
    }
  }
}, 60_000);

afterAll(async () => {
  await api?.close();
  await open?.close();
});

describe('GET /api/jobs', () => {
  it('lists each tenant’s own jobs newest first; an admin sees every tenant’s, or one', async () => {
    const alice = await list('alice');
    expect(alice.status).toBe(200);
    expect(ids(alice.body)).toEqual([...submitted.alice!].reverse());
    expect(alice.body.next_cursor).toBeNull();
    expect(alice.body.jobs[0]).toMatchObject({ status: 'queued', model_name: 'tiny', params: { prompt: 'alice 4' } });
    expect(ids((await list('bob')).body)).toEqual([...submitted.bob!].reverse());
    const everyone = await list('root');
    expect(new Set(ids(everyone.body))).toEqual(new Set([...submitted.alice!, ...submitted.bob!]));
    const times = everyone.body.jobs.map((job: { created_at: string }) => job.created_at);
    expect(times).toEqual([...times].sort().reverse());
    expect(ids((await list('root', { tenant: 'acme' })).body)).toEqual([...submitted.alice!].reverse());
  });

  it('refuses another tenant to a tenant’s key, a caller without a key, and every caller without keys', async () => {
    expect(await list('alice', { tenant: 'globex' })).toMatchObject({ status: 400, body: { error: { code: 'validation_error', field: 'tenant' } } });
    expect((await list(undefined)).status).toBe(401);
    expect(await list(undefined, {}, open)).toMatchObject({ status: 403, body: { error: { code: 'keys_required' } } });
  });

  it('pages with a cursor: the pages together are the whole list, once', async () => {
    const pages: string[][] = [];
    let cursor: string | undefined;
    do {
      const { status, body } = await list('alice', { limit: '2', ...(cursor ? { cursor } : {}) });
      expect(status).toBe(200);
      pages.push(ids(body));
      cursor = body.next_cursor ?? undefined;
    } while (cursor);
    expect(pages.map((page) => page.length)).toEqual([2, 2, 1]);
    expect(pages.flat()).toEqual([...submitted.alice!].reverse());
  });

  it('gives an admin every tenant’s jobs in pages, each once, in the order of the tenants’ own lists', async () => {
    const all = await allPages('root', { limit: '3' });
    expect(all.map((page) => page.length)).toEqual([3, 3, 1]);
    const listed = all.flat();
    expect(new Set(listed).size).toBe(listed.length);
    expect(new Set(listed)).toEqual(new Set([...submitted.alice!, ...submitted.bob!]));
    // Each tenant's jobs keep their order among the others'.
    expect(listed.filter((id) => submitted.alice!.includes(id))).toEqual([...submitted.alice!].reverse());
    expect(listed.filter((id) => submitted.bob!.includes(id))).toEqual([...submitted.bob!].reverse());
    const times = (await list('root')).body.jobs.map((job: { created_at: string }) => job.created_at);
    expect(times).toEqual([...times].sort().reverse());
  });

  it('filters by status and by model; an entry whose record is gone is not listed', async () => {
    const canceled = submitted.alice![1]!;
    expect((await fetch(`${api.url}/api/jobs/${canceled}`, { method: 'DELETE', headers: bearer('alice') })).status).toBe(200);
    expect(ids((await list('alice', { status: 'canceled' })).body)).toEqual([canceled]);
    // An ending is read from its own lists, the tenant's and everyone's: the canceled job is in both, the queued ones are not.
    const store = api.services.store;
    const endedKeys = (await store.listPage('ended/acme/', {})).keys;
    expect(endedKeys).toHaveLength(1);
    expect(endedKeys[0]).toMatch(new RegExp(`^ended/acme/canceled/\\d{5}/\\d{2}/\\d{2}/\\d{13}-${canceled}-tiny$`));
    expect((await store.listPage('ended/~all/', {})).keys).toEqual([endedKeys[0]!.replace('/acme/', '/~all/')]);
    // An entry whose record says otherwise is not listed: the record is the truth.
    await store.put(endedKeys[0]!.replace('/canceled/', '/succeeded/'), canceled, 'text/plain');
    await store.put(endedKeys[0]!.replace('/acme/canceled/', '/~all/succeeded/'), canceled, 'text/plain');
    expect(ids((await list('alice', { status: 'succeeded' })).body)).toEqual([]);
    expect(ids((await list('root', { status: 'succeeded' })).body)).toEqual([]);
    expect(ids((await list('root', { status: 'canceled' })).body)).toEqual([canceled]);
    expect(ids((await list('root', { status: 'canceled', tenant: 'globex' })).body)).toEqual([]);
    expect(ids((await list('alice', { status: 'queued' })).body)).toHaveLength(4);
    expect(ids((await list('alice', { model: 'tiny' })).body)).toHaveLength(5);
    expect(ids((await list('alice', { model: 'other' })).body)).toEqual([]);
    // An admin's filters, and pages of them, hold the same jobs as the tenants' own.
    const queued = [...submitted.alice!, ...submitted.bob!].filter((id) => id !== canceled);
    expect(new Set((await allPages('root', { status: 'queued', limit: '2' })).flat())).toEqual(new Set(queued));
    expect((await allPages('root', { status: 'queued', limit: '2' })).flat()).toHaveLength(6);
    expect((await allPages('root', { model: 'tiny', limit: '4' })).flat()).toHaveLength(7);
    expect(ids((await list('root', { model: 'other' })).body)).toEqual([]);
    // An intake that failed after writing the entry leaves one without a record.
    const stray = lifecycle.queued({ id: 'A'.repeat(22), model_name: 'tiny', priority: 'normal', params: { prompt: 'x', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 }, width: 8, height: 8, input_key: 'x', idempotency: null, tenant: 'acme' }).record;
    await addToList(api.services.store, stray);
    expect(ids((await list('alice')).body)).toHaveLength(5);
    expect(ids((await list('root')).body)).toHaveLength(7);
  });

  it('answers 400 for a malformed query, naming the parameter', async () => {
    for (const [query, field] of [[{ limit: '0' }, 'limit'], [{ limit: '101' }, 'limit'], [{ cursor: 'nope' }, 'cursor'], [{ status: 'done' }, 'status']] as const) {
      expect(await list('alice', query), JSON.stringify(query)).toMatchObject({ status: 400, body: { error: { field } } });
    }
    // The list of everyone's jobs has a name no tenant can have: nobody names it.
    for (const who of ['alice', 'root']) {
      expect(await list(who, { tenant: '~all' })).toMatchObject({ status: 400, body: { error: { field: 'tenant' } } });
    }
  });
});
