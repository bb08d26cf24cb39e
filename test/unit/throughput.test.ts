import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { ObjectStore } from '../../common/storage.js';
import { Throughput } from '../../consumer/throughput.js';

/** An object store that keeps what is put, in memory. */
function memoryStore() {
  const objects = new Map<string, string>();
  const store = {
    put: async (key: string, body: string) => {
      objects.set(key, body);
      return 'etag';
    },
    delete: async (key: string) => void objects.delete(key),
  } as unknown as ObjectStore;
  return { store, objects };
}

describe('Throughput', () => {
  beforeEach(() => vi.useFakeTimers({ now: Date.parse('2025-01-01T00:00:00.000Z') }));
  afterEach(() => vi.useRealTimers());

  const make = (store: ObjectStore) => new Throughput({ store, model: 'tiny', consumer: 'c1', logger: createLogger('test', 'silent') });

  it('measures jobs ended per second with jobs in hand and the mean run time of the successes', () => {
    const pace = make(memoryStore().store);
    pace.start();
    for (let second = 0; second < 4; second++) {
      pace.began();
      pace.began();
      pace.started();
      expect(pace.snapshot().running).toBe(1); // handed over, one of them started
      vi.advanceTimersByTime(500);
      pace.returned({ ended: true, runSeconds: 1, started: true });
      pace.returned({ ended: true, runSeconds: 3 });
      vi.advanceTimersByTime(500);
    }
    const stats = pace.snapshot();
    expect(stats.jobs_per_second).toBe(4); // 8 jobs in the 2 s that jobs were in hand
    expect(stats.mean_run_s).toBe(2);
    expect(stats.running).toBe(0);
    expect(stats.ended).toBe(8);
  });

  it('leaves idle seconds out of the rate, and counts no retry as ended', () => {
    const pace = make(memoryStore().store);
    pace.start();
    pace.began();
    vi.advanceTimersByTime(2000);
    pace.returned({ ended: true, runSeconds: 2 });
    vi.advanceTimersByTime(30_000); // idle
    pace.began();
    pace.returned({ ended: false }); // to be tried again
    const stats = pace.snapshot();
    expect(stats.ended).toBe(1);
    expect(stats.jobs_per_second).toBe(0.5); // two seconds with a job in hand
  });

  it('writes its record when it changed, at most every two seconds, and removes it when stopped', async () => {
    const { store, objects } = memoryStore();
    const put = vi.spyOn(store, 'put');
    const pace = make(store);
    pace.start();
    vi.advanceTimersByTime(1000);
    expect(put).toHaveBeenCalledTimes(1); // the first: the consumer is alive
    pace.began();
    pace.started();
    vi.advanceTimersByTime(1000);
    expect(put).toHaveBeenCalledTimes(1); // changed, but written a second ago
    vi.advanceTimersByTime(1000);
    expect(put).toHaveBeenCalledTimes(2);
    expect(JSON.parse(objects.get('models/tiny/stats/c1.json')!)).toMatchObject({ running: 1, model: 'tiny', consumer: 'c1' });
    await pace.stop();
    expect(objects.has('models/tiny/stats/c1.json')).toBe(false);
  });
});
