// The log of a job's webhook deliveries in object storage (jobs/<id>/webhooks.json, beside the
// record, so it expires with the job). The dispatcher writes an attempt before it schedules the
// next one; writes are compare-and-swap on the ETag, since deliveries of one job can be tried
// from several retry topics at once.
import { DeliveryLog } from './webhooks.js';
import { jobKeys, type ObjectStore } from './storage.js';

const JSON_TYPE = 'application/json';

export class DeliveryLogConflict extends Error {
  override name = 'DeliveryLogConflict';
}

export class DeliveryLogStore {
  constructor(private readonly store: ObjectStore) {}

  async get(jobId: string, signal?: AbortSignal): Promise<DeliveryLog | undefined> {
    return (await this.read(jobId, signal))?.log;
  }

  /** Applies `change` to the log (a new empty one when there is none) and writes it if nobody wrote in between. */
  async update(jobId: string, url: string, change: (log: DeliveryLog) => DeliveryLog, signal?: AbortSignal): Promise<DeliveryLog> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const current = await this.read(jobId, signal);
      const next = change(current?.log ?? { v: 1, job_id: jobId, url, stopped_at: null, deliveries: [] });
      const body = JSON.stringify(next);
      const key = jobKeys(jobId).webhooks;
      const written = current
        ? await this.store.putIfMatch(key, body, JSON_TYPE, current.etag, signal)
        : await this.store.putIfAbsent(key, body, JSON_TYPE, signal);
      if (written !== undefined) return next;
    }
    throw new DeliveryLogConflict(`webhook log of job ${jobId}: too many concurrent updates`);
  }

  private async read(jobId: string, signal?: AbortSignal): Promise<{ log: DeliveryLog; etag: string } | undefined> {
    const stored = await this.store.get(jobKeys(jobId).webhooks, signal);
    if (!stored) return undefined;
    return { log: DeliveryLog.parse(JSON.parse(stored.bytes.toString('utf8'))), etag: stored.etag };
  }
}
