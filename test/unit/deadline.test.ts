// race(): the deadline answers for work that cannot be aborted, and the work's own failure
// after the deadline is never an unhandled rejection (which ends a Node process).
import { describe, expect, it } from 'vitest';
import { DeadlineExceeded, race } from '../../common/deadline.js';

/** Collects the unhandled rejections of the process while `body` runs, and a turn after. */
async function unhandledDuring(body: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const listener = (reason: unknown) => void seen.push(reason);
  process.on('unhandledRejection', listener);
  try {
    await body();
    await new Promise((resolve) => setTimeout(resolve, 20));
  } finally {
    process.off('unhandledRejection', listener);
  }
  return seen;
}

describe('race', () => {
  it('settles with the work when it is in time', async () => {
    expect(await race(Promise.resolve(7), new AbortController().signal)).toBe(7);
  });

  it('rejects with DeadlineExceeded on an already spent deadline, and the work failing after is handled', async () => {
    const controller = new AbortController();
    controller.abort();
    const seen = await unhandledDuring(async () => {
      const work = Promise.reject(new Error('AbortError from the SDK'));
      await expect(race(work, controller.signal)).rejects.toBeInstanceOf(DeadlineExceeded);
    });
    expect(seen).toEqual([]);
  });

  it('rejects when the deadline passes first, and the work failing later is handled', async () => {
    const controller = new AbortController();
    const seen = await unhandledDuring(async () => {
      let fail!: (error: Error) => void;
      const work = new Promise<never>((_, reject) => (fail = reject));
      const raced = race(work, controller.signal);
      controller.abort();
      await expect(raced).rejects.toBeInstanceOf(DeadlineExceeded);
      fail(new Error('late'));
    });
    expect(seen).toEqual([]);
  });
});
