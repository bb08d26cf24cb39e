// Each tenant's jobs, newest first, without listing jobs/: an index entry a job,
// `list/<tenant>/<13 digits: 10^13 - created ms>-<id>-<model>` (its body: the id), written with the job's
// input and deleted when the job expires. Key order is then newest first, the model can be
// filtered from the key alone, and a page is one ListObjectsV2 from a cursor (StartAfter).
// An ended job has a second entry, the same name under `ended/<tenant>/<ending>/`, written with
// its ending's events (common/outbox.ts): a status filter on an ending reads that list, not every job.
import { type Ending, isEnding, type JobRecord } from './jobs.js';
import type { ObjectStore } from './storage.js';

export const LIST_PREFIX = 'list/';
export const ENDED_PREFIX = 'ended/';
const TIME_SPAN = 10 ** 13;
/** After every model name ([a-z0-9._-]): a StartAfter that skips a cursor's own entry. */
const PAST_MODEL = '~';

export interface ListEntry {
  id: string;
  model: string;
  created_at: string;
  /** Where a page that ends with this entry continues. */
  cursor: string;
}

/** The list of a tenant's jobs, or of those that ended so. */
export const tenantList = (tenant: string) => `${LIST_PREFIX}${tenant}/`;
export const endedList = (tenant: string, ending: Ending) => `${ENDED_PREFIX}${tenant}/${ending}/`;

/** The position of a job in its tenant's list: newest first, then by id. */
function position(record: Pick<JobRecord, 'id' | 'created_at'>): string {
  return `${String(TIME_SPAN - Date.parse(record.created_at)).padStart(13, '0')}-${record.id}`;
}

/** The index key of a job; undefined for a job without a tenant (the API without keys lists nothing). */
export function listKey(record: Pick<JobRecord, 'id' | 'created_at' | 'tenant' | 'model_name'>): string | undefined {
  return record.tenant ? `${tenantList(record.tenant)}${position(record)}-${record.model_name}` : undefined;
}

/** The key of an ended job's entry in its ending's list; undefined without a tenant or an ending. */
function endedKey(record: JobRecord): string | undefined {
  return record.tenant && isEnding(record.status) ? `${endedList(record.tenant, record.status)}${position(record)}-${record.model_name}` : undefined;
}

export function parseListKey(key: string): ListEntry | undefined {
  const name = key.slice(key.lastIndexOf('/', key.length - 1) + 1);
  const match = /^(\d{13})-([A-Za-z0-9_-]{22})-(.+)$/.exec(name);
  if (!match) return undefined;
  return { id: match[2]!, model: match[3]!, created_at: new Date(TIME_SPAN - Number(match[1])).toISOString(), cursor: `${match[1]}-${match[2]}` };
}

export const CURSOR = /^\d{13}-[A-Za-z0-9_-]{22}$/;

/** The job's entry, if it has a tenant. */
export async function addToList(store: ObjectStore, record: JobRecord, signal?: AbortSignal): Promise<void> {
  const key = listKey(record);
  // The id as its body: the AWS SDK warns on every request with an empty one.
  if (key) await store.put(key, record.id, 'text/plain', signal);
}

/** The ended job's entry in its ending's list, if it has a tenant. */
export async function addToEndedList(store: Pick<ObjectStore, 'put'>, record: JobRecord, signal?: AbortSignal): Promise<void> {
  const key = endedKey(record);
  if (key) await store.put(key, record.id, 'text/plain', signal);
}

/** Both of the job's entries (an expiring job keeps its ending until its record says expired). */
export async function removeFromList(store: ObjectStore, record: JobRecord, signal?: AbortSignal): Promise<void> {
  const keys = [listKey(record), endedKey(record)].filter((key) => key !== undefined);
  await Promise.all(keys.map((key) => store.delete(key, signal)));
}

/** Every tenant that has a list (one delimiter listing a page, for an admin's view of all). */
export async function listedTenants(store: ObjectStore, signal?: AbortSignal): Promise<string[]> {
  const tenants: string[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await store.listPage(LIST_PREFIX, { delimiter: '/', startAfter }, signal);
    tenants.push(...page.prefixes.map((prefix) => prefix.slice(LIST_PREFIX.length, -1)));
    if (!page.truncated || !page.prefixes.length) return tenants;
    startAfter = page.prefixes.at(-1);
  }
}

/**
 * Up to `count` entries of these lists (tenantList, endedList) after `cursor`, newest first: one
 * page of each, merged (a single list: one listing).
 */
export async function listEntries(store: ObjectStore, lists: string[], count: number, cursor: string | undefined, signal?: AbortSignal): Promise<{ entries: ListEntry[]; more: boolean }> {
  const pages = await Promise.all(
    lists.map((list) => store.listPage(list, { maxKeys: count, startAfter: cursor ? `${list}${cursor}-${PAST_MODEL}` : undefined }, signal)),
  );
  const merged = pages
    .flatMap((page) => page.keys.map(parseListKey))
    .filter((entry): entry is ListEntry => entry !== undefined)
    .sort((a, b) => (a.cursor < b.cursor ? -1 : a.cursor > b.cursor ? 1 : 0));
  return { entries: merged.slice(0, count), more: merged.length > count || pages.some((page) => page.truncated) };
}
