// The intake of one job, in the order that keeps the system consistent:
//   the sweeper's entry -> put input and produce the message (acks=all), together -> create
//   the record (queued) -> queued event.
// A record that says queued always has its input and a message behind it: the record is the
// commit point. The message carries the record as it will be written (less its place in Kafka):
// a consumer hands the job to its runner from it at once, and the start's write, conditional on
// that version of the record, is what checks that the job was accepted and is still queued. A message
// whose record never appears is skipped by the consumer as abandoned after a short wait, and its
// input swept. On any failure the client gets 503 and the input, the record and the idempotency
// claim are removed (best effort).
import { randomInt } from 'node:crypto';
import { addToList, removeFromList } from '../common/joblist.js';
import { newJobId, type JobEvent, type JobMessage, type JobRecord } from '../common/jobs.js';
import * as lifecycle from '../common/lifecycle.js';
import { PARAMS } from '../common/params.js';
import type { Logger } from '../common/logger.js';
import type { RecordStore } from '../common/records.js';
import { jobKeys, type ObjectStore } from '../common/storage.js';
import { jobTopic } from '../common/topics.js';
import { call } from './dependency.js';
import { Conflict } from './errors.js';
import { hashKey, type IdempotencyStore } from './idempotency.js';
import type { AcceptedImage } from './image.js';
import type { Publisher } from '../common/publisher.js';
import { requestHash, type Submission } from './submission.js';
import type { Sweeper } from './sweeper.js';
import type { WebhookSettings } from '../common/webhooks.js';

/** A job id, taken once the request's fields are valid, whose sweep entry is written while its image is checked. */
export interface Reservation {
  id: string;
  entry: Promise<void>;
}

export interface NewSubmission {
  reservation: Reservation;
  submission: Submission;
  image: AcceptedImage;
  /** With the sha256 of the image as uploaded: what makes two requests "the same". */
  idempotency: { key: string; imageSha256: string } | undefined;
  /** The tenant whose key submits it (null without keys); Idempotency-Keys are its own. */
  tenant?: string | null;
  /** Where the job's events go as signed webhooks (api/webhook.ts); null or absent: nowhere. */
  webhook?: WebhookSettings | null;
  /** When it must start or end (api/deadlines.ts); null or absent: never. */
  deadlines?: JobRecord['deadlines'];
}

type Idempotency = NonNullable<JobRecord['idempotency']>;

export interface IntakeDeps {
  store: ObjectStore;
  records: RecordStore;
  publisher: Publisher;
  claims: IdempotencyStore;
  sweeper: Pick<Sweeper, 'scheduleFirstCheck' | 'writeEntriesNow'>;
  topicPrefix: string;
  timeoutMs: number;
  log: Logger;
}

export class Intake {
  constructor(private readonly deps: IntakeDeps) {}

  /**
   * The id of a job about to be submitted, and its first sweep check under way: that write then
   * costs the request no time. A request that fails before submit leaves an entry whose check
   * finds no record and deletes nothing.
   */
  reserve(): Reservation {
    const id = newJobId();
    const entry = this.deps.sweeper.scheduleFirstCheck(id);
    entry.catch(() => {}); // awaited by submit
    return { id, entry };
  }

  /** The job to answer 202 with: a new one, or the one an earlier request with the same Idempotency-Key made. */
  async submit(job: NewSubmission, deadline: AbortSignal): Promise<JobRecord> {
    const { record, event } = newJob(job, this.idempotency(job));
    if (record.idempotency) {
      const earlier = await this.claim(record, record.idempotency, deadline);
      if (earlier) return earlier;
    }
    let queuedRecord: JobRecord;
    try {
      queuedRecord = await this.enqueue(record, job.image.png, job.reservation.entry, deadline);
    } catch (error) {
      void this.undo(record);
      throw error;
    }
    void this.announce(event!, record.webhook !== null);
    return queuedRecord;
  }

  private idempotency({ idempotency, submission, tenant, webhook }: NewSubmission): Idempotency | null {
    if (!idempotency) return null;
    // Scoped per tenant: two tenants using the same key get two jobs.
    const key = tenant ? `${tenant}\n${idempotency.key}` : idempotency.key;
    return { key_hash: hashKey(key), request_hash: requestHash(submission, idempotency.imageSha256, webhook) };
  }

  /** The record as created: with its message's place in Kafka, which its queue position is counted from. */
  private async enqueue(record: JobRecord, png: Buffer, entry: Promise<void>, deadline: AbortSignal): Promise<JobRecord> {
    const { store, records, publisher, topicPrefix } = this.deps;
    const message: JobMessage = { v: 1, id: record.id, model_name: record.model_name, priority: record.priority, created_at: record.created_at, record };
    const topic = jobTopic(topicPrefix, record.model_name, record.priority);
    // The sweeper's entry first: an input stored by an intake that dies right after is still found.
    this.deps.sweeper.writeEntriesNow();
    await call('storage', () => entry, deadline);
    // Stamped with the job's acceptance time: jobs on other partitions are ordered against it by timestamp (common/position.ts).
    const kafkaMessage = { key: record.id, value: JSON.stringify(message), timestamp: String(Date.parse(record.created_at)) };
    // The input, its place in the tenant's job list (an entry whose record never comes is skipped
    // there) and the message, at once: none of them is read before the record exists.
    const [placed] = await Promise.all([
      call('kafka', (signal) => publisher.send(topic, kafkaMessage, signal), deadline),
      call('storage', (signal) => Promise.all([store.put(record.input_key, png, 'image/png', signal), addToList(store, record, signal)]), deadline),
    ]);
    const queued: JobRecord = placed.offset === '-1' ? record : { ...record, queue: { topic, ...placed } };
    await call('storage', (signal) => records.create(queued, signal), deadline);
    return queued;
  }

  /** Undefined when this request won the key; the earlier job when the same request already made one. */
  private async claim(record: JobRecord, idempotency: Idempotency, deadline: AbortSignal): Promise<JobRecord | undefined> {
    const { claims, records } = this.deps;
    const claim = { job_id: record.id, request_hash: idempotency.request_hash, created_at: record.created_at };
    const result = await call('storage', (signal) => claims.claim(idempotency.key_hash, claim, signal), deadline);
    if (result.won) return undefined;
    const { existing, etag } = result;
    if (existing && existing.request_hash !== idempotency.request_hash) {
      throw new Conflict('this Idempotency-Key was already used for a different request', {
        code: 'idempotency_key_reused',
        field: 'Idempotency-Key',
      });
    }
    const earlier = existing && (await call('storage', (signal) => records.get(existing.job_id, signal), deadline));
    if (earlier) return earlier;
    if (existing && etag && this.isStale(existing.created_at)) {
      const tookOver = await call('storage', (signal) => claims.takeOver(idempotency.key_hash, claim, etag, signal), deadline);
      if (tookOver) return undefined;
    }
    throw new Conflict('a request with this Idempotency-Key is still being processed; retry shortly', {
      code: 'idempotency_in_progress',
      field: 'Idempotency-Key',
      retryAfter: 1,
    });
  }

  /** A claim whose job never got a record, long after its request must have answered: its release was lost. */
  private isStale(createdAt: string): boolean {
    return Date.now() - Date.parse(createdAt) > 3 * this.deps.timeoutMs;
  }

  private async undo(record: JobRecord): Promise<void> {
    const { store, claims, log } = this.deps;
    const signal = AbortSignal.timeout(this.deps.timeoutMs);
    const remove = (key: string) => store.delete(key, signal);
    const steps: Promise<unknown>[] = [remove(record.input_key), remove(jobKeys(record.id).record), removeFromList(store, record, signal)];
    if (record.idempotency) steps.push(claims.release(record.idempotency.key_hash, signal));
    const failed = (await Promise.allSettled(steps)).filter((step) => step.status === 'rejected');
    if (failed.length) log.warn({ job: record.id, failures: failed.length }, 'could not remove every part of a failed intake');
  }

  /** The queued event is best effort: SSE clients also get the state from the record's snapshot. */
  private async announce(event: JobEvent, webhook: boolean): Promise<void> {
    try {
      await this.deps.publisher.publishEvent(event, AbortSignal.timeout(this.deps.timeoutMs), webhook);
    } catch (error) {
      this.deps.log.warn({ job: event.id, err: error }, 'could not publish the queued event');
    }
  }
}

function newJob({ reservation, submission, image, tenant, webhook, deadlines }: NewSubmission, idempotency: Idempotency | null): lifecycle.Transition {
  const { id } = reservation;
  const { model_name, priority, seed, ...params } = submission;
  return lifecycle.queued({
    id,
    model_name,
    priority,
    params: { ...params, seed: seed ?? randomInt(PARAMS.seed.maximum + 1) },
    width: image.width,
    height: image.height,
    input_key: jobKeys(id).input,
    idempotency,
    tenant: tenant ?? null,
    webhook: webhook ?? null,
    ...(deadlines ? { deadlines } : {}),
  });
}
