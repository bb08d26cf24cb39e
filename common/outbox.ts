// A job's ending is announced at least once: the transition writes its event into the record's
// outbox (common/lifecycle.ts), this publishes what the outbox holds, enters the job in its
// ending's list (common/joblist.ts) and then takes the events out. A crash in between leaves them
// in the outbox, and whoever meets the record next sends them.
import { addToEndedList } from './joblist.js';
import { isEnding, type JobRecord } from './jobs.js';
import * as lifecycle from './lifecycle.js';
import type { Publisher } from './publisher.js';
import type { RecordStore } from './records.js';
import type { ObjectStore } from './storage.js';

export interface OutboxDeps {
  publisher: Pick<Publisher, 'publishEvent'>;
  records: Pick<RecordStore, 'apply'>;
  store: Pick<ObjectStore, 'put'>;
}

/** Publishes the events in the record's outbox, then marks them delivered; throws when Kafka or the store fails (the events stay). */
export async function publishOutbox({ publisher, records, store }: OutboxDeps, record: JobRecord | undefined, signal: AbortSignal): Promise<void> {
  if (!record?.outbox.length) return;
  const { outbox } = record;
  const listed = outbox.some((event) => isEnding(event.type)) ? addToEndedList(store, record, signal) : undefined;
  await Promise.all([...outbox.map((event) => publisher.publishEvent(event, signal, record.webhook !== null)), listed]);
  await records.apply(record.id, (r) => lifecycle.delivered(r, outbox));
}
