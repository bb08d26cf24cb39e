import { describe, expect, it } from 'vitest';
import { lag } from '../../common/depth.js';

describe('lag', () => {
  const partitions = [
    { partition: 0, low: '0', high: '10' },
    { partition: 1, low: '5', high: '8' },
    { partition: 2, low: '4', high: '4' },
  ];

  it('counts from the committed offset', () => {
    expect(lag(partitions, [{ partition: 0, offset: '7' }, { partition: 1, offset: '8' }, { partition: 2, offset: '4' }])).toBe(3);
  });

  it('counts a partition without a commit from its low watermark', () => {
    expect(lag(partitions, [{ partition: 0, offset: '-1' }])).toBe(10 + 3 + 0);
    expect(lag(partitions, [])).toBe(13);
  });

  it('never counts below the low watermark or below zero', () => {
    expect(lag(partitions, [{ partition: 1, offset: '2' }, { partition: 0, offset: '12' }])).toBe(0 + 3 + 0);
  });
});
