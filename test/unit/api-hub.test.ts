import { describe, expect, it } from 'vitest';
import { formatPosition, isAfter, parsePosition, Subscription, type PositionedEvent } from '../../api/hub.js';

const delivery = (offset: number): PositionedEvent => ({
  event: { v: 1, id: 'job', type: 'progress', at: '2025-01-01T00:00:00Z', model_name: 'tiny', step: offset, total: 9 },
  position: { partition: 0, offset },
});

describe('positions', () => {
  it('round-trips <partition>-<offset> and refuses anything else', () => {
    expect(parsePosition(formatPosition({ partition: 2, offset: 41 }))).toEqual({ partition: 2, offset: 41 });
    for (const bad of [undefined, '', 'x-1', '1', '1-2-3', '-1-2']) expect(parsePosition(bad)).toBeUndefined();
  });

  it('orders events of one partition by offset', () => {
    expect(isAfter({ partition: 0, offset: 5 }, { partition: 0, offset: 4 })).toBe(true);
    expect(isAfter({ partition: 0, offset: 4 }, { partition: 0, offset: 4 })).toBe(false);
    expect(isAfter({ partition: 1, offset: 1 }, { partition: 0, offset: 4 })).toBe(true);
    expect(isAfter({ partition: 0, offset: 0 }, undefined)).toBe(true);
  });
});

describe('Subscription', () => {
  it('hands events out in order, and ends with undefined once closed', async () => {
    const closed: Subscription[] = [];
    const subscription = new Subscription('job', 10, (s) => closed.push(s));
    const waiting = subscription.next();
    subscription.push(delivery(1));
    subscription.push(delivery(2));
    expect((await waiting)?.position?.offset).toBe(1);
    expect((await subscription.next())?.position?.offset).toBe(2);
    subscription.close();
    expect(await subscription.next()).toBeUndefined();
    expect(closed).toEqual([subscription]);
  });

  it('drops a client that falls more than its limit behind instead of buffering without end', async () => {
    const subscription = new Subscription('job', 3, () => {});
    for (let offset = 0; offset < 4; offset++) subscription.push(delivery(offset));
    expect(subscription.endReason).toBe('overflow');
    expect(await subscription.next()).toBeUndefined();
  });
});
