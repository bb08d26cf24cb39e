// Each tenant's jobs, newest first, without listing jobs/: an index entry a job,
// `list/<tenant>/<folders>/<13 digits: 10^13 - created ms>-<id>-<model>` (its body: the id), written
// with the job's input and deleted when the job expires. Key order is then newest first, the model
// can be filtered from the key alone, and a page is one ListObjectsV2 from a cursor (StartAfter).
// The folders are the digits' leading 5, next 2 and next 2 (27.8 h, 16.7 min and 10 s of
// acceptance times): MinIO reads a whole folder level to list from any point in it, so flat
// lists cost more the longer they grow (a LIST of 50 from a folder of 100k entries took 60 ms,
// from these folders 4-9 ms); S3 itself does not care. Folders take nothing from the order.
// A job also has the same entry in the list of every tenant's jobs, `list/~all/` (a name no tenant
// can have), so an admin's page is one LIST too, not one a tenant merged.
// An ended job has entries under `ended/<tenant>/<ending>/` and `ended/~all/<ending>/`, written with
// its ending's events (common/outbox.ts): a status filter on an ending reads that list, not every job.
import { type Ending, isEnding, type JobRecord } from './jobs.js';
import type { ObjectStore } from './storage.js';

export const LIST_PREFIX = 'list/';
export const ENDED_PREFIX = 'ended/';
/** The lists of every tenant's jobs: outside TENANT's alphabet, so no tenant's own. */
export const ALL_TENANTS = '~all';
const TIME_SPAN = 10 ** 13;
/** Where the position's digits are cut into folders (see above). */
const FOLDER_CUTS = [5, 7, 9];
/** After every model name ([a-z0-9._-]): a StartAfter that skips a cursor's own entry. */
const PAST_MODEL = '~';

export interface ListEntry {
  id: string;
  model: string;
  created_at: string;
  /** Where a page that ends with this entry continues. */
  cursor: string;
}

/** The list of a tenant's jobs (ALL_TENANTS: everyone's), or of those that ended so. */
export const tenantList = (tenant: string) => `${LIST_PREFIX}${tenant}/`;
export const endedList = (tenant: string, ending: Ending) => `${ENDED_PREFIX}${tenant}/${ending}/`;

/** A position's path in a list, `<folders>/<position>`: the folders are its leading digits. */
function placed(position: string): string {
  const folders = FOLDER_CUTS.map((end, n) => position.slice(FOLDER_CUTS[n - 1] ?? 0, end));
  return `${folders.join('/')}/${position}`;
}

/** The position of a job in its tenant's list, newest first, then by id: also the cursor of a page that ends with it. */
function position(record: Pick<JobRecord, 'id' | 'created_at'>): string {
  return `${String(TIME_SPAN - Date.parse(record.created_at)).padStart(13, '0')}-${record.id}`;
}

/** The job's keys in these lists (its tenant's and everyone's); none for a job without a tenant (the API without keys lists nothing). */
function keysIn(lists: (tenant: string) => string, record: Pick<JobRecord, 'id' | 'created_at' | 'tenant' | 'model_name'>): string[] {
  if (!record.tenant) return [];
  const name = `${placed(position(record))}-${record.model_name}`;
  return [lists(record.tenant), lists(ALL_TENANTS)].map((list) => `${list}${name}`);
}

/** The job's keys in its tenant's list and in everyone's. */
export const listKeys = (record: Pick<JobRecord, 'id' | 'created_at' | 'tenant' | 'model_name'>) => keysIn(tenantList, record);

/** An ended job's keys in its ending's lists; none without an ending. */
const endedKeys = (record: JobRecord) => (isEnding(record.status) ? keysIn((tenant) => endedList(tenant, record.status as Ending), record) : []);

export function parseListKey(key: string): ListEntry | undefined {
  const name = key.slice(key.lastIndexOf('/', key.length - 1) + 1);
  const match = /^(\d{13})-([A-Za-z0-9_-]{22})-(.+)$/.exec(name);
  if (!match) return undefined;
  return { id: match[2]!, model: match[3]!, created_at: new Date(TIME_SPAN - Number(match[1])).toISOString(), cursor: `${match[1]}-${match[2]}` };
}

export const CURSOR = /^\d{13}-[A-Za-z0-9_-]{22}$/;

const putEntries = (store: Pick<ObjectStore, 'put'>, keys: string[], id: string, signal?: AbortSignal) =>
  // The id as its body: the AWS SDK warns on every request with an empty one.
  Promise.all(keys.map((key) => store.put(key, id, 'text/plain', signal)));

/** The job's entries in its tenant's list and in everyone's, if it has a tenant. */
export async function addToList(store: Pick<ObjectStore, 'put'>, record: JobRecord, signal?: AbortSignal): Promise<void> {
  await putEntries(store, listKeys(record), record.id, signal);
}

/** The ended job's entries in its ending's lists, if it has a tenant. */
export async function addToEndedList(store: Pick<ObjectStore, 'put'>, record: JobRecord, signal?: AbortSignal): Promise<void> {
  await putEntries(store, endedKeys(record), record.id, signal);
}

/** All of the job's entries (an expiring job keeps its ending until its record says expired). */
export async function removeFromList(store: Pick<ObjectStore, 'delete'>, record: JobRecord, signal?: AbortSignal): Promise<void> {
  await Promise.all([...listKeys(record), ...endedKeys(record)].map((key) => store.delete(key, signal)));
}

/** Up to `count` entries of a list (tenantList, endedList) after `cursor`, newest first: one LIST. */
export async function listEntries(store: Pick<ObjectStore, 'listPage'>, list: string, count: number, cursor: string | undefined, signal?: AbortSignal): Promise<{ entries: ListEntry[]; more: boolean }> {
  const startAfter = cursor ? `${list}${placed(cursor)}-${PAST_MODEL}` : undefined;
  const page = await store.listPage(list, { maxKeys: count, startAfter }, signal);
  const entries = page.keys.map(parseListKey).filter((entry): entry is ListEntry => entry !== undefined);
  return { entries, more: page.truncated };
}
