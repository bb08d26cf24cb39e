import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { JobRecord } from '../../common/jobs.js';
import type { JobStanding } from '../../common/view.js';
import { StandingWatch } from '../../api/standings.js';

const job = (id: string, model = 'tiny') => ({ id, model_name: model, status: 'queued' }) as unknown as JobRecord;
const standing = (position: number): JobStanding => ({ queue_position: position, estimated_start_at: null, estimated_finish_at: null });

describe('StandingWatch', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  /** A queue whose positions the test sets; it counts the lookups of each poll. */
  function fakeQueue() {
    const positions = new Map<string, number>();
    const lookups: string[] = [];
    const queue = {
      standing: async (record: JobRecord) => {
        lookups.push(record.id);
        return standing(positions.get(record.id) ?? 0);
      },
    };
    return { positions, lookups, queue };
  }

  it('polls once a second per model for every stream, and tells each only a changed position', async () => {
    const { positions, lookups, queue } = fakeQueue();
    const watch = new StandingWatch(queue);
    const told: Record<string, number[]> = { a: [], b: [] };
    positions.set('a', 3).set('b', 5);
    watch.watch(job('a'), 3, (s) => told.a!.push(s.queue_position!));
    watch.watch(job('b'), 5, (s) => told.b!.push(s.queue_position!));
    expect(vi.getTimerCount()).toBe(1); // one poll for the model, whatever the streams
    watch.watch(job('c', 'other'), 0, () => {});
    expect(vi.getTimerCount()).toBe(2);
    await vi.advanceTimersByTimeAsync(1000);
    expect(lookups).toEqual(['a', 'b', 'c']);
    lookups.splice(0);
    expect(told).toEqual({ a: [], b: [] }); // nothing changed since the snapshots
    positions.set('a', 2).set('b', 4);
    await vi.advanceTimersByTimeAsync(1000);
    positions.set('a', 1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(told).toEqual({ a: [2, 1], b: [4] });
    expect(lookups).toHaveLength(6);
  });

  it('says nothing after it is stopped, and stops polling once nobody follows the model', async () => {
    const { positions, lookups, queue } = fakeQueue();
    const watch = new StandingWatch(queue);
    const told: number[] = [];
    positions.set('a', 3);
    const stop = watch.watch(job('a'), 4, (s) => told.push(s.queue_position!));
    stop();
    await vi.advanceTimersByTimeAsync(3000);
    expect(told).toEqual([]);
    expect(lookups).toEqual([]);
    expect(watch.size).toBe(0);
  });

  it('drops an answer that arrives after its stream stopped following', async () => {
    let answer: (s: JobStanding) => void = () => {};
    const watch = new StandingWatch({ standing: () => new Promise<JobStanding>((resolve) => (answer = resolve)) });
    const told: number[] = [];
    const stop = watch.watch(job('a'), 4, (s) => told.push(s.queue_position!));
    await vi.advanceTimersByTimeAsync(1000); // the poll asks
    stop(); // the job started meanwhile
    answer(standing(2));
    await vi.advanceTimersByTimeAsync(0);
    expect(told).toEqual([]);
  });
});
