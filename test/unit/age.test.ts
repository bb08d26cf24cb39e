import { describe, expect, it } from 'vitest';
import { oldestAge } from '../../common/age.js';
import type { TopicOffsets } from '../../common/depth.js';

const NOW = Date.parse('2026-12-07T12:00:00Z');

/**
 * A topic whose partitions hold messages stamped these many seconds ago (oldest first), with the
 * group's commits; and Kafka's lookup over them (first offset stamped at or after t, else the high
 * watermark), counting the calls.
 */
function topic(partitions: number[][], committed: number[]) {
  const stamps = partitions.map((ages) => ages.map((age) => NOW - age * 1000));
  const offsets: TopicOffsets = {
    topic: 't',
    partitions: stamps.map((messages, partition) => ({ partition, low: '0', high: String(messages.length) })),
    committed: committed.map((offset, partition) => ({ partition, offset: String(offset) })),
  };
  let lookups = 0;
  const offsetsAt = async (_topic: string, time: number) => {
    lookups++;
    if (!Number.isInteger(time)) throw new RangeError(`kafkajs takes whole milliseconds, not ${time}`);
    return stamps.map((messages, partition) => {
      const index = messages.findIndex((stamp) => stamp >= time);
      return { partition, offset: String(index < 0 ? messages.length : index) };
    });
  };
  return { offsets, offsetsAt, lookups: () => lookups };
}

describe('oldestAge', () => {
  it('is 0 without a lookup when the group has consumed everything', async () => {
    const t = topic([[600, 300], [100]], [2, 1]);
    expect(await oldestAge(t.offsets, t.offsetsAt, NOW)).toBe(0);
    expect(t.lookups()).toBe(0);
  });

  it('finds the oldest unconsumed message over every partition, within 4.4 % below its age, in at most 17 lookups', async () => {
    for (const age of [5, 90, 1000, 7200, 86_400 * 3]) {
      // Partition 0: an old message already consumed, then one aged `age`; partition 1: younger ones.
      const t = topic([[age * 10, age], [age / 2, 1]], [1, -1]);
      const found = await oldestAge(t.offsets, t.offsetsAt, NOW);
      expect(found, `age ${age}`).toBeLessThanOrEqual(age);
      expect(found, `age ${age}`).toBeGreaterThanOrEqual(Math.floor(age / 1.045));
      expect(t.lookups()).toBeLessThanOrEqual(17);
    }
  });

  it('counts from the low watermark on a partition the group never committed on', async () => {
    const t = topic([[4000, 3000]], [-1]);
    expect(await oldestAge(t.offsets, t.offsetsAt, NOW)).toBeGreaterThan(3800);
  });

  it('reads a queue older than a month as a month', async () => {
    const t = topic([[90 * 86_400]], [-1]);
    expect(await oldestAge(t.offsets, t.offsetsAt, NOW)).toBe(30 * 86_400);
  });

  it('is 0 for a message stamped less than a second ago', async () => {
    const t = topic([[0.2]], [-1]);
    expect(await oldestAge(t.offsets, t.offsetsAt, NOW)).toBe(0);
  });
});
