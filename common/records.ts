// Reads and updates job records in object storage. Updates are compare-and-swap on
// the object's ETag (S3 conditional writes), so the API's cancel and a consumer's
// result cannot overwrite each other.
import { createHash } from 'node:crypto';
import { JobRecord, type JobEvent } from './jobs.js';
import type { Transition } from './lifecycle.js';
import { jobKeys, type ObjectStore } from './storage.js';

export class RecordConflict extends Error {
  override name = 'RecordConflict';
}

interface Versioned {
  record: JobRecord;
  etag: string;
}

/** The record after a transition, and its event when this call made the change. */
export interface Applied {
  record: JobRecord | undefined;
  event: JobEvent | undefined;
}

/** How many records' last known versions are kept to skip a read before an update. */
const KNOWN_VERSIONS = 1000;
const JSON_TYPE = 'application/json';

/** A record's bytes as stored: its keys in the schema's order, so that whoever holds the record can tell its ETag. */
export const recordBody = (record: JobRecord) => JSON.stringify(JobRecord.parse(record));
/** S3's ETag of a single-part, unencrypted PUT: the MD5 of the body, quoted. */
const md5Etag = (body: string | Buffer) => `"${createHash('md5').update(body).digest('hex')}"`;

export class RecordStore {
  /** The last version this process read or wrote of each record: an update tries it first. */
  private readonly known = new Map<string, Versioned>();
  /** False once the store answered an ETag that is not its body's MD5 (encryption, compression): records handed over are then read. */
  private etagsAreMd5 = true;

  constructor(private readonly store: ObjectStore) {}

  async get(id: string, signal?: AbortSignal): Promise<JobRecord | undefined> {
    return (await this.read(id, signal))?.record;
  }

  /** Writes a new record; fails with RecordConflict when one exists already. */
  async create(record: JobRecord, signal?: AbortSignal): Promise<void> {
    const body = recordBody(record);
    const etag = await this.store.putIfAbsent(jobKeys(record.id).record, body, JSON_TYPE, signal);
    if (etag === undefined) throw new RecordConflict(`job ${record.id} exists`);
    this.observe(body, etag);
    this.remember(record.id, { record, etag });
  }

  /**
   * A record as its creator wrote it, known without reading it (it came in the job's message):
   * the next update writes on its ETag, told from its bytes, and a record changed since (or not
   * written yet) costs that write a 412 (or a 404) and a read. False when the store's ETags are
   * not MD5s, or the record is known already.
   */
  handOver(record: JobRecord): boolean {
    if (!this.etagsAreMd5 || this.known.has(record.id)) return false;
    const parsed = JobRecord.parse(record);
    this.remember(record.id, { record: parsed, etag: md5Etag(JSON.stringify(parsed)) });
    return true;
  }

  /** Applies a lifecycle transition (see common/lifecycle.ts); the event is set only when this call's write won. */
  async apply(id: string, transition: (record: JobRecord) => Transition | undefined, signal?: AbortSignal): Promise<Applied> {
    let event: JobEvent | undefined;
    const record = await this.update(
      id,
      (current) => {
        const next = transition(current);
        event = next?.event;
        return next?.record;
      },
      signal,
    );
    return { record, event: record && event }; // no record: a transition tried on a version handed over did not land
  }

  /**
   * Applies `change` to the current record and writes it back if nobody wrote in
   * between, retrying on a lost race. `change` returns undefined to leave it as is.
   */
  async update(
    id: string,
    change: (record: JobRecord) => JobRecord | undefined,
    signal?: AbortSignal,
  ): Promise<JobRecord | undefined> {
    for (let attempt = 0; attempt < 20; attempt++) {
      // A stale cached version costs one 412 and a fresh read; a current one saves the read.
      const current = (attempt === 0 && this.known.get(id)) || (await this.read(id, signal));
      if (!current) return undefined;
      const next = change(structuredClone(current.record));
      if (!next) return current.record;
      next.updated_at = new Date().toISOString();
      const etag = await this.store
        .putIfMatch(jobKeys(id).record, JSON.stringify(next), JSON_TYPE, current.etag, signal)
        .catch((error: unknown) => {
          this.known.delete(id); // the write may have landed: read before the next try
          throw error;
        });
      if (etag !== undefined) {
        this.remember(id, { record: next, etag });
        return next;
      }
      this.known.delete(id);
    }
    throw new RecordConflict(`job ${id}: too many concurrent updates`);
  }

  private observe(body: string | Buffer, etag: string): void {
    if (this.etagsAreMd5 && etag !== md5Etag(body)) this.etagsAreMd5 = false;
  }

  private remember(id: string, versioned: Versioned): void {
    this.known.delete(id); // re-inserted last: the Map's order is the eviction order
    this.known.set(id, versioned);
    if (this.known.size > KNOWN_VERSIONS) this.known.delete(this.known.keys().next().value!);
  }

  private async read(id: string, signal?: AbortSignal): Promise<Versioned | undefined> {
    const stored = await this.store.get(jobKeys(id).record, signal);
    if (!stored) return undefined;
    this.observe(stored.bytes, stored.etag);
    const versioned = { record: JobRecord.parse(JSON.parse(stored.bytes.toString('utf8'))), etag: stored.etag };
    this.remember(id, versioned);
    return versioned;
  }
}
