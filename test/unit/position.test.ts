import { describe, expect, it } from 'vitest';
import type { ModelOffsets } from '../../common/depth.js';
import { positionOf, QueuePositions, type OffsetsAt } from '../../common/position.js';
import { combineStats, type ConsumerStats } from '../../common/stats.js';
import { estimate, loadOf, QueueView } from '../../api/queue.js';
import type { JobRecord } from '../../common/jobs.js';
import { createLogger } from '../../common/logger.js';
import type { ObjectStore } from '../../common/storage.js';
import { NO_STANDING } from '../../common/view.js';

/** A model's offsets: per priority, each partition's [low, high] and the group's commit ('-1': none). */
function offsets(spec: Record<'high' | 'normal' | 'low', [number, number, number][]>): ModelOffsets {
  const topic = (priority: string, partitions: [number, number, number][]) => ({
    topic: `p.tiny.${priority}`,
    partitions: partitions.map(([low, high], partition) => ({ partition, low: String(low), high: String(high) })),
    committed: partitions.map(([, , commit], partition) => ({ partition, offset: String(commit) })),
  });
  return { high: topic('high', spec.high), normal: topic('normal', spec.normal), low: topic('low', spec.low) };
}

describe('positionOf', () => {
  const empty: [number, number, number][] = [[0, 0, -1]];

  it('counts the messages before the job on its partition from the group’s commit', () => {
    const model = offsets({ high: empty, normal: [[0, 20, 7]], low: empty });
    expect(positionOf({ topic: 'p.tiny.normal', partition: 0, offset: '12' }, 'normal', model, [])).toBe(5);
    // The next message to consume: nothing is ahead of it.
    expect(positionOf({ topic: 'p.tiny.normal', partition: 0, offset: '7' }, 'normal', model, [])).toBe(0);
  });

  it('counts from the low watermark where the group never committed, and never below zero', () => {
    const model = offsets({ high: empty, normal: [[3, 20, -1]], low: empty });
    expect(positionOf({ topic: 'p.tiny.normal', partition: 0, offset: '10' }, 'normal', model, [])).toBe(7);
    const consumed = offsets({ high: empty, normal: [[0, 20, 15]], low: empty });
    expect(positionOf({ topic: 'p.tiny.normal', partition: 0, offset: '10' }, 'normal', consumed, [])).toBe(0);
  });

  it('puts every unconsumed message of a higher priority ahead, and none of a lower one', () => {
    const model = offsets({ high: [[0, 9, 4], [0, 3, -1]], normal: [[0, 10, 8]], low: [[0, 50, 0]] });
    const place = { topic: 'p.tiny.normal', partition: 0, offset: '9' };
    expect(positionOf(place, 'normal', model, [])).toBe(5 + 3 + 1);
    expect(positionOf({ topic: 'p.tiny.high', partition: 1, offset: '2' }, 'high', model, [])).toBe(2);
    expect(positionOf({ topic: 'p.tiny.low', partition: 0, offset: '0' }, 'low', model, [])).toBe(5 + 3 + 2);
  });

  it('adds the messages produced before it on the other partitions, not its own twice', () => {
    const model = offsets({ high: empty, normal: [[0, 10, 4], [0, 30, 20], [5, 9, -1]], low: empty });
    const before = [
      { partition: 0, offset: '6' }, // its own partition: counted by offset instead
      { partition: 1, offset: '26' },
      { partition: 2, offset: '5' },
    ];
    expect(positionOf({ topic: 'p.tiny.normal', partition: 0, offset: '8' }, 'normal', model, before)).toBe(4 + 6 + 0);
  });
});

describe('QueuePositions', () => {
  // Two partitions on the normal topic, so a position needs the offsets at the job's acceptance.
  const model = offsets({ high: [[0, 0, -1]], normal: [[0, 10, 2], [0, 10, 2]], low: [[0, 0, -1]] });
  const depth = { offsets: async () => new Map([['tiny', model]]) };
  const queued = (acceptedAt: number) =>
    ({
      id: `j${acceptedAt}`,
      status: 'queued',
      model_name: 'tiny',
      priority: 'normal',
      created_at: new Date(acceptedAt).toISOString(),
      queue: { topic: 'p.tiny.normal', partition: 0, offset: '5' },
    }) as unknown as JobRecord;
  /** An admin whose by-timestamp lookups are counted; each answers 7 on partition 1 unless told to fail. */
  function admin(fail = false) {
    const asked: string[] = [];
    return {
      asked,
      fetchTopicOffsetsByTimestamp: async (topic: string, time?: number): Promise<OffsetsAt> => {
        asked.push(`${topic}@${time}`);
        if (fail) throw new Error('broker down');
        return [{ partition: 0, offset: '4' }, { partition: 1, offset: '7' }];
      },
    };
  }
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('asks a recent job’s offsets again once they expire, since a message stamped before it may still arrive', async () => {
    const kafka = admin();
    const positions = new QueuePositions(kafka, depth, 20, { settleMs: 60_000 });
    const job = queued(Date.now());
    expect(await positions.of(job)).toBe(3 + 5); // 3 before it on its partition, 5 on the other
    expect(await positions.of(job)).toBe(8);
    expect(kafka.asked).toHaveLength(1);
    await sleep(30);
    await positions.of(job);
    expect(kafka.asked).toHaveLength(2);
  });

  it('asks a settled job’s offsets once, however often its position is read', async () => {
    const kafka = admin();
    const positions = new QueuePositions(kafka, depth, 20, { settleMs: 5000 });
    const job = queued(Date.now() - 6000);
    for (let i = 0; i < 3; i++) {
      expect(await positions.of(job)).toBe(8);
      await sleep(30);
    }
    expect(kafka.asked).toEqual([`p.tiny.normal@${Date.parse(job.created_at)}`]);
  });

  it('keeps no failed lookup', async () => {
    const kafka = admin(true);
    const positions = new QueuePositions(kafka, depth, 1000, { settleMs: 0 });
    const job = queued(Date.now() - 1000);
    await expect(positions.of(job)).rejects.toThrow('broker down');
    await expect(positions.of(job)).rejects.toThrow('broker down');
    expect(kafka.asked).toHaveLength(2);
    expect(positions.size).toBe(0);
  });

  it('keeps at most its limit of lookups, the most recently used ones', async () => {
    const kafka = admin();
    const positions = new QueuePositions(kafka, depth, 1000, { settleMs: 0, limit: 10 });
    const first = queued(1_000);
    await positions.of(first);
    for (let i = 1; i <= 30; i++) {
      await positions.of(queued(1_000 + i));
      await positions.of(first); // read again each time: never the least recently used
    }
    expect(positions.size).toBeLessThanOrEqual(10);
    const asked = kafka.asked.length;
    await positions.of(first);
    await positions.of(queued(1_030)); // the newest
    expect(kafka.asked).toHaveLength(asked);
    await positions.of(queued(1_001)); // long gone
    expect(kafka.asked).toHaveLength(asked + 1);
  });
});

const stats = (over: Partial<ConsumerStats>): ConsumerStats => ({
  v: 1, model: 'tiny', consumer: 'c', updated_at: '2025-01-01T00:00:00.000Z', running: 0, jobs_per_second: null, mean_run_s: null, ended: 0, ...over,
});

describe('combineStats', () => {
  it('adds consumers’ rates and running jobs and weighs their mean run times by the jobs measured', () => {
    const combined = combineStats([
      stats({ consumer: 'a', running: 2, jobs_per_second: 1.5, mean_run_s: 2, ended: 30, updated_at: '2025-01-01T00:00:01.000Z' }),
      stats({ consumer: 'b', running: 1, jobs_per_second: 0.5, mean_run_s: 6, ended: 10, updated_at: '2025-01-01T00:00:03.000Z' }),
      stats({ consumer: 'c', running: 0 }),
    ]);
    expect(combined).toEqual({ running: 3, jobs_per_second: 2, mean_run_s: 3, updated_at: '2025-01-01T00:00:03.000Z' });
  });

  it('knows no rate before a consumer measured one', () => {
    expect(combineStats([stats({ running: 1 })])).toEqual({ running: 1, jobs_per_second: null, mean_run_s: null, updated_at: '2025-01-01T00:00:00.000Z' });
    expect(combineStats([])).toEqual({ running: 0, jobs_per_second: null, mean_run_s: null, updated_at: null });
  });
});

describe('estimate', () => {
  const now = Date.parse('2025-01-01T12:00:00.000Z');

  it('starts once the jobs ahead that have not started end, at the model’s rate, and finishes a mean run later', () => {
    const pace = { running: 2, jobs_per_second: 2, mean_run_s: 1.5, updated_at: null };
    expect(estimate(8, pace, now)).toEqual({ estimated_start_at: '2025-01-01T12:00:03.000Z', estimated_finish_at: '2025-01-01T12:00:04.500Z' });
    expect(estimate(1, pace, now).estimated_start_at).toBe('2025-01-01T12:00:00.000Z');
    expect(estimate(0, pace, now).estimated_start_at).toBe('2025-01-01T12:00:00.000Z');
  });

  it('gives no times without a measured rate, and no finish without a mean run time', () => {
    expect(estimate(3, undefined, now)).toEqual({ estimated_start_at: null, estimated_finish_at: null });
    expect(estimate(3, { running: 0, jobs_per_second: null, mean_run_s: 2, updated_at: null }, now)).toEqual({ estimated_start_at: null, estimated_finish_at: null });
    expect(estimate(3, { running: 0, jobs_per_second: 1, mean_run_s: null, updated_at: null }, now)).toEqual({ estimated_start_at: '2025-01-01T12:00:03.000Z', estimated_finish_at: null });
  });
});

describe('loadOf', () => {
  const depth = { high: 1, normal: 4, low: 0, total: 5 };

  it('splits the depth into the jobs the consumers hold and those waiting', () => {
    const pace = { running: 2, jobs_per_second: 0.8, mean_run_s: 2.5, updated_at: '2025-01-01T00:00:00.000Z' };
    expect(loadOf(depth, pace)).toEqual({ queued: 3, running: 2, rate: { jobs_per_second: 0.8, mean_run_s: 2.5, updated_at: '2025-01-01T00:00:00.000Z' } });
  });

  it('never counts more running than the depth holds (the consumers’ report lags), nor a rate it has not measured', () => {
    expect(loadOf(depth, { running: 9, jobs_per_second: null, mean_run_s: null, updated_at: '2025-01-01T00:00:00.000Z' })).toEqual({ queued: 0, running: 5, rate: null });
    expect(loadOf(depth, undefined)).toEqual({ queued: 5, running: 0, rate: null });
  });
});

describe('QueueView.standing', () => {
  const record = {
    id: 'q0vN3rJ8T6yWm1bXc2dEfA', status: 'queued', model_name: 'tiny', priority: 'normal', created_at: '2025-01-01T12:00:00.000Z',
    queue: { topic: 'p.tiny.normal', partition: 0, offset: '4' },
  } as unknown as JobRecord;
  const view = (of: () => Promise<number | undefined>) =>
    new QueueView({
      positions: { of },
      depth: { get: async () => new Map() },
      store: { list: async function* () {} } as unknown as ObjectStore,
      models: ['tiny'],
      log: createLogger('test', 'silent'),
    });

  it('gives the position without times while no rate is measured', async () => {
    expect(await view(async () => 3).standing(record)).toEqual({ queue_position: 3, estimated_start_at: null, estimated_finish_at: null });
    expect(await view(async () => 3).standing({ ...record, status: 'running' })).toEqual(NO_STANDING);
  });

  it('leaves the standing out within a second when Kafka hangs, and at once for a while after', async () => {
    let lookups = 0;
    const queue = view(() => {
      lookups += 1;
      return new Promise(() => {}); // never answers
    });
    expect(await queue.standing(record)).toEqual(NO_STANDING); // answered, though the lookup never is
    expect(await queue.standing(record)).toEqual(NO_STANDING);
    expect(lookups).toBe(1); // the second read did not wait for Kafka again
  });
});
