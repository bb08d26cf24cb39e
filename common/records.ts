// Reads and updates job records in object storage. Updates are compare-and-swap on
// the object's ETag (S3 conditional writes), so the API's cancel and a consumer's
// result cannot overwrite each other.
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { JobRecord } from './jobs.js';
import { jobKeys, type ObjectStore } from './storage.js';

export class RecordConflict extends Error {
  override name = 'RecordConflict';
}

interface Versioned {
  record: JobRecord;
  etag: string;
}

const isStatus = (error: unknown, code: number) =>
  (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === code;

/** How many records' last known versions are kept to skip a read before an update. */
const KNOWN_VERSIONS = 1000;

export class RecordStore {
  /** The last version this process read or wrote of each record: an update tries it first. */
  private readonly known = new Map<string, Versioned>();

  constructor(private readonly store: ObjectStore) {}

  async get(id: string, signal?: AbortSignal): Promise<JobRecord | undefined> {
    return (await this.read(id, signal))?.record;
  }

  /** Writes a new record; fails with RecordConflict when one exists already. */
  async create(record: JobRecord, signal?: AbortSignal): Promise<void> {
    try {
      await this.store.s3.send(
        new PutObjectCommand({
          Bucket: this.store.bucket,
          Key: jobKeys(record.id).record,
          Body: JSON.stringify(record),
          ContentType: 'application/json',
          IfNoneMatch: '*',
        }),
        { abortSignal: signal },
      );
    } catch (error) {
      if (isStatus(error, 412) || isStatus(error, 409)) throw new RecordConflict(`job ${record.id} exists`);
      throw error;
    }
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
      try {
        const written = await this.store.s3.send(
          new PutObjectCommand({
            Bucket: this.store.bucket,
            Key: jobKeys(id).record,
            Body: JSON.stringify(next),
            ContentType: 'application/json',
            IfMatch: current.etag,
          }),
          { abortSignal: signal },
        );
        this.remember(id, { record: next, etag: written.ETag! });
        return next;
      } catch (error) {
        this.known.delete(id);
        if (!isStatus(error, 412) && !isStatus(error, 409)) throw error;
      }
    }
    throw new RecordConflict(`job ${id}: too many concurrent updates`);
  }

  private remember(id: string, versioned: Versioned): void {
    this.known.delete(id); // re-inserted last: the Map's order is the eviction order
    this.known.set(id, versioned);
    if (this.known.size > KNOWN_VERSIONS) this.known.delete(this.known.keys().next().value!);
  }

  private async read(id: string, signal?: AbortSignal): Promise<Versioned | undefined> {
    try {
      const result = await this.store.s3.send(
        new GetObjectCommand({ Bucket: this.store.bucket, Key: jobKeys(id).record }),
        { abortSignal: signal },
      );
      const text = await result.Body!.transformToString('utf8');
      const versioned = { record: JobRecord.parse(JSON.parse(text)), etag: result.ETag! };
      this.remember(id, versioned);
      return versioned;
    } catch (error) {
      if (isStatus(error, 404)) return undefined;
      throw error;
    }
  }
}
