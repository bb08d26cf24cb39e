import { describe, expect, it } from 'vitest';
import { PriorityBuffers } from '../../consumer/buffers.js';
import { OffsetTracker } from '../../consumer/offsets.js';
import { stallBound } from '../../consumer/process.js';

describe('PriorityBuffers', () => {
  it('serves high before normal before low, FIFO within a priority', () => {
    const buffers = new PriorityBuffers<string>();
    buffers.push('low', 'l1');
    buffers.push('normal', 'n1');
    buffers.push('low', 'l2');
    buffers.push('high', 'h1');
    buffers.push('high', 'h2');
    expect([buffers.take(), buffers.take(), buffers.take(), buffers.take(), buffers.take(), buffers.take()]).toEqual([
      'h1', 'h2', 'n1', 'l1', 'l2', undefined,
    ]);
  });

  it('removes matching items and counts by priority', () => {
    const buffers = new PriorityBuffers<string>();
    buffers.push('low', 'a');
    buffers.push('low', 'b');
    buffers.push('high', 'c');
    expect(buffers.remove((item) => item === 'b')).toEqual(['b']);
    expect(buffers.size('low')).toBe(1);
    expect(buffers.size()).toBe(2);
  });

  it('names the priority it serves next', () => {
    const buffers = new PriorityBuffers<string>();
    expect(buffers.nextPriority()).toBeUndefined();
    buffers.push('low', 'a');
    expect(buffers.nextPriority()).toBe('low');
    buffers.push('high', 'b');
    expect(buffers.nextPriority()).toBe('high');
  });
});

describe('OffsetTracker', () => {
  it('commits only up to the lowest unfinished offset', () => {
    const offsets = new OffsetTracker();
    for (const offset of ['5', '6', '7']) offsets.begin('t', 0, offset);
    offsets.finish('t', 0, '6');
    expect(offsets.takeCommittable()).toEqual([{ topic: 't', partition: 0, offset: '5' }]);
    offsets.finish('t', 0, '5');
    expect(offsets.takeCommittable()).toEqual([{ topic: 't', partition: 0, offset: '7' }]);
    offsets.finish('t', 0, '7');
    expect(offsets.takeCommittable()).toEqual([{ topic: 't', partition: 0, offset: '8' }]);
    expect(offsets.takeCommittable()).toEqual([]);
  });

  it('tracks partitions independently', () => {
    const offsets = new OffsetTracker();
    offsets.begin('t', 0, '1');
    offsets.begin('t', 1, '10');
    offsets.finish('t', 1, '10');
    expect(offsets.takeCommittable()).toEqual([
      { topic: 't', partition: 0, offset: '1' },
      { topic: 't', partition: 1, offset: '11' },
    ]);
  });
});

describe('stallBound', () => {
  it('is RUNNER_STALL_MS up to 512x512, and grows with the pixels past it', () => {
    expect(stallBound(120_000, 0)).toBe(120_000);
    expect(stallBound(120_000, 64 * 64)).toBe(120_000);
    expect(stallBound(120_000, 512 * 512)).toBe(120_000);
    expect(stallBound(120_000, 1024 * 1024)).toBe(480_000);
    expect(stallBound(1000, 2048 * 1024)).toBe(8000);
  });
});
