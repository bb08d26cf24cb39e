// Reads and updates job records in object storage. Updates are compare-and-swap on
// the object's ETag (S3 conditional writes), so the API's cancel and a consumer's
// result cannot overwrite each other.
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

export class RecordStore {
  /** The last version this process read or wrote of each record: an update tries it first. */
  private readonly known = new Map<string, Versioned>();

  constructor(private readonly store: ObjectStore) {}

  async get(id: string, signal?: AbortSignal): Promise<JobRecord | undefined> {
    return (await this.read(id, signal))?.record;
  }

  /** Writes a new record; fails with RecordConflict when one exists already. */
  async create(record: JobRecord, signal?: AbortSignal): Promise<void> {
    const etag = await this.store.putIfAbsent(jobKeys(record.id).record, JSON.stringify(record), JSON_TYPE, signal);
    if (etag === undefined) throw new RecordConflict(`job ${record.id} exists`);
    this.remember(record.id, { record, etag });
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
    return { record, event };
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

  private remember(id: string, versioned: Versioned): void {
    this.known.delete(id); // re-inserted last: the Map's order is the eviction order
    this.known.set(id, versioned);
    if (this.known.size > KNOWN_VERSIONS) this.known.delete(this.known.keys().next().value!);
  }

  private async read(id: string, signal?: AbortSignal): Promise<Versioned | undefined> {
    const stored = await this.store.get(jobKeys(id).record, signal);
    if (!stored) return undefined;
    const versioned = { record: JobRecord.parse(JSON.parse(stored.bytes.toString('utf8'))), etag: stored.etag };
    this.remember(id, versioned);
    return versioned;
  }
}
