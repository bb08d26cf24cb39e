// publishOutbox with fakes: an ending enters its list before the events leave the outbox, and a
// failure of Kafka or of the store leaves them there for the next try.
import { describe, expect, it } from 'vitest';
import type { JobEvent, JobRecord } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';
import { publishOutbox } from '../../common/outbox.js';

const params = { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 };
const queued = (tenant?: string) =>
  lifecycle.queued({ id: 'B'.repeat(22), model_name: 'tiny', priority: 'normal', params, width: 64, height: 64, input_key: 'in', idempotency: null, tenant }).record;

function fakes(fail: { kafka?: boolean; store?: boolean } = {}) {
  const published: JobEvent[] = [];
  const puts: string[] = [];
  let current: JobRecord | undefined;
  const deps = {
    publisher: { publishEvent: async (event: JobEvent) => (fail.kafka ? Promise.reject(new Error('kafka down')) : void published.push(event)) },
    store: { put: async (key: string) => (fail.store ? Promise.reject(new Error('store down')) : (puts.push(key), '"etag"')) },
    records: {
      apply: async (_id: string, transition: (r: JobRecord) => lifecycle.Transition | undefined) => {
        current = transition(current!)?.record ?? current;
        return { record: current, event: undefined };
      },
    },
  };
  return { deps, published, puts, set: (record: JobRecord) => (current = record), get: () => current };
}

describe('publishOutbox', () => {
  it('publishes an ending, enters the job in its ending’s lists (its tenant’s and everyone’s), then empties the outbox', async () => {
    const ended = lifecycle.cancel(queued('acme'))!.record;
    const { deps, published, puts, set, get } = fakes();
    set(ended);
    await publishOutbox(deps, ended, AbortSignal.timeout(1000));
    expect(published.map((event) => event.type)).toEqual(['canceled']);
    expect(puts).toHaveLength(2);
    expect(puts[0]).toMatch(/^ended\/acme\/canceled\/\d{5}\/\d{2}\/\d{2}\/\d{13}-B{22}-tiny$/);
    expect(puts[1]).toBe(puts[0]!.replace('/acme/', '/~all/'));
    expect(get()!.outbox).toEqual([]);
  });

  it('lists nothing for a job without a tenant', async () => {
    const ended = lifecycle.cancel(queued())!.record;
    const { deps, published, puts, set } = fakes();
    set(ended);
    await publishOutbox(deps, ended, AbortSignal.timeout(1000));
    expect([published.length, puts.length]).toEqual([1, 0]);
  });

  it('keeps the events when Kafka or the store fails', async () => {
    for (const fail of [{ kafka: true }, { store: true }]) {
      const ended = lifecycle.cancel(queued('acme'))!.record;
      const { deps, set, get } = fakes(fail);
      set(ended);
      await expect(publishOutbox(deps, ended, AbortSignal.timeout(1000))).rejects.toThrow(/down/);
      expect(get()!.outbox).toHaveLength(1);
    }
  });
});
