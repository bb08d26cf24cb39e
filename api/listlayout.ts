// Job-list entries written before the lists had folders (`list/<tenant>/<position>-<model>`, and
// the same under `ended/<tenant>/<ending>/`) would be listed out of order and outlive their jobs,
// since retention deletes entries where common/joblist.ts puts them now. At start the API moves
// each one into its folders and everyone's list, or deletes it when its job is gone, then marks
// the bucket done. The new entries are written before the old one is deleted, so replicas moving
// the same entry at once, or a start that stops half-way, lose nothing.
import { addToEndedList, addToList, ALL_TENANTS, ENDED_PREFIX, LIST_PREFIX, parseListKey } from '../common/joblist.js';
import type { RecordStore } from '../common/records.js';
import type { ObjectStore } from '../common/storage.js';

/** Written once no entry of the old layout is left. */
export const MOVED_MARKER = 'sweep/list-layout.json';

type Store = Pick<ObjectStore, 'get' | 'put' | 'delete' | 'listPage'>;

/** The keys and subfolders right under a folder, every page. */
async function* level(store: Store, folder: string, signal?: AbortSignal): AsyncGenerator<{ keys: string[]; prefixes: string[] }> {
  let startAfter: string | undefined;
  for (;;) {
    const page = await store.listPage(folder, { delimiter: '/', startAfter }, signal);
    yield page;
    const last = [...page.keys, ...page.prefixes].sort().at(-1);
    if (!page.truncated || last === undefined) return;
    startAfter = last;
  }
}

async function subfolders(store: Store, folder: string, signal?: AbortSignal): Promise<string[]> {
  const found: string[] = [];
  for await (const page of level(store, folder, signal)) found.push(...page.prefixes);
  return found;
}

/** Moves the old-layout entries right under `folder` (a tenant's list or ending's list); returns how many it met. */
async function moveFolder(store: Store, records: Pick<RecordStore, 'get'>, folder: string, ended: boolean, signal?: AbortSignal): Promise<number> {
  let met = 0;
  for await (const page of level(store, folder, signal)) {
    for (const key of page.keys) {
      const entry = parseListKey(key);
      if (!entry) continue;
      met += 1;
      const record = await records.get(entry.id, signal);
      // An ending's entries are written only for a job that ended (addToEndedList writes none otherwise).
      if (record && record.status !== 'expired') await (ended ? addToEndedList : addToList)(store, record, signal);
      await store.delete(key, signal);
    }
  }
  return met;
}

/** Moves every old-layout entry of the bucket (once: a marker says it was done); returns how many it met. */
export async function moveFlatEntries(store: Store, records: Pick<RecordStore, 'get'>, signal?: AbortSignal): Promise<number> {
  if (await store.get(MOVED_MARKER, signal)) return 0;
  const own = (folder: string, root: string) => folder !== `${root}${ALL_TENANTS}/`;
  let met = 0;
  for (const tenant of (await subfolders(store, LIST_PREFIX, signal)).filter((folder) => own(folder, LIST_PREFIX))) {
    met += await moveFolder(store, records, tenant, false, signal);
  }
  for (const tenant of (await subfolders(store, ENDED_PREFIX, signal)).filter((folder) => own(folder, ENDED_PREFIX))) {
    for (const ending of await subfolders(store, tenant, signal)) met += await moveFolder(store, records, ending, true, signal);
  }
  await store.put(MOVED_MARKER, JSON.stringify({ moved_at: new Date().toISOString(), entries: met }), 'application/json', signal);
  return met;
}
