// A job's ending is announced at least once: the transition writes its event into the record's
// outbox (common/lifecycle.ts), this publishes what the outbox holds and then takes it out. A
// crash in between leaves the event in the outbox, and whoever meets the record next sends it.
import type { JobRecord } from './jobs.js';
import * as lifecycle from './lifecycle.js';
import type { Publisher } from './publisher.js';
import type { RecordStore } from './records.js';

export interface OutboxDeps {
  publisher: Pick<Publisher, 'publishEvent'>;
  records: Pick<RecordStore, 'apply'>;
}

/** Publishes the events in the record's outbox, then marks them delivered; throws when Kafka fails (the events stay). */
export async function publishOutbox({ publisher, records }: OutboxDeps, record: JobRecord | undefined, signal: AbortSignal): Promise<void> {
  if (!record?.outbox.length) return;
  const { outbox } = record;
  await Promise.all(outbox.map((event) => publisher.publishEvent(event, signal)));
  await records.apply(record.id, (r) => lifecycle.delivered(r, outbox));
}
