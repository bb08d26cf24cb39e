import { describe, expect, it } from 'vitest';
import type { DeliveryLogStore } from '../../common/deliveries.js';
import { newJobId, type JobRecord } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';
import { createLogger } from '../../common/logger.js';
import type { RecordStore } from '../../common/records.js';
import { jobKeys } from '../../common/storage.js';
import type { TenantStore } from '../../common/tenants.js';
import type { WebhookClient } from '../../dispatcher/client.js';
import { Courier } from '../../dispatcher/courier.js';

function job(webhook: { url: string; events: ('started' | 'progress' | 'succeeded')[] } | null): JobRecord {
  const id = newJobId();
  return lifecycle.queued({
    id, model_name: 'tiny', priority: 'normal', width: 64, height: 64, input_key: jobKeys(id).input, idempotency: null,
    params: { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 },
    webhook,
  }).record;
}

/** A Courier over records held in memory, counting the reads of each job's record. */
function courierOver(records: JobRecord[]): { courier: Courier; reads: Map<string, number> } {
  const reads = new Map<string, number>();
  const store = {
    get: async (id: string) => {
      reads.set(id, (reads.get(id) ?? 0) + 1);
      return records.find((record) => record.id === id);
    },
  };
  const courier = new Courier({
    records: store as unknown as RecordStore,
    deliveries: { get: async () => undefined } as unknown as DeliveryLogStore,
    tenants: {} as TenantStore,
    client: {} as WebhookClient,
    baseUrl: 'http://127.0.0.1:1',
    retryBaseMs: 100,
    logger: createLogger('courier-test', 'silent'),
  });
  return { courier, reads };
}

/** The events of a job that started, made two steps and succeeded. */
function events(record: JobRecord) {
  const at = (s: number) => new Date(Date.parse(record.created_at) + s * 2000).toISOString();
  return [
    lifecycle.eventOf(record, 'started', at(1)),
    lifecycle.eventOf(record, 'progress', at(2), { step: 1, total: 2 }),
    lifecycle.eventOf(record, 'progress', at(3), { step: 2, total: 2 }),
    lifecycle.eventOf(record, 'succeeded', at(4)),
  ];
}

describe('Courier.fromEvent', () => {
  it('reads the record of a job without a webhook once for all its events, and asks for no delivery', async () => {
    const plain = job(null);
    const { courier, reads } = courierOver([plain]);
    for (const event of events(plain)) expect(await courier.fromEvent(event)).toBeUndefined();
    expect(reads.get(plain.id)).toBe(1);
  });

  it('reads the record for every event of a job with a webhook, and delivers the events it chose', async () => {
    const hooked = job({ url: 'https://receiver.example/hook', events: ['started', 'succeeded'] });
    const { courier, reads } = courierOver([hooked]);
    const deliveries = [];
    for (const event of events(hooked)) deliveries.push(await courier.fromEvent(event));
    expect(deliveries.map((delivery) => delivery?.event)).toEqual(['started', undefined, undefined, 'succeeded']);
    expect(reads.get(hooked.id)).toBe(4);
  });

  it('reads again for a job whose record was not there yet', async () => {
    const late = job(null);
    const records: JobRecord[] = [];
    const { courier, reads } = courierOver(records);
    const [started, ...rest] = events(late);
    expect(await courier.fromEvent(started!)).toBeUndefined();
    records.push(late);
    for (const event of rest) expect(await courier.fromEvent(event)).toBeUndefined();
    expect(reads.get(late.id)).toBe(2);
  });
});
