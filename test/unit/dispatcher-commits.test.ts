import { describe, expect, it } from 'vitest';
import { ThrottledCommits } from '../../dispatcher/commits.js';

type Offsets = { topic: string; partition: number; offset: string }[];

/** A consumer whose commits are recorded; each takes `ms`, and the ones listed in `failing` reject. */
function consumer(ms = 0, failing = new Set<number>()) {
  const commits: Offsets[] = [];
  let calls = 0;
  return {
    commits,
    commitOffsets: async (offsets: Offsets) => {
      const call = calls++;
      await new Promise((resolve) => setTimeout(resolve, ms));
      if (failing.has(call)) throw new Error('rebalance in progress');
      commits.push(offsets);
    },
  };
}
const quiet = { debug: () => {} };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('ThrottledCommits', () => {
  it('commits each partition’s latest progress once an interval, not once a batch', async () => {
    const kafka = consumer();
    const commits = new ThrottledCommits(kafka, 50, quiet);
    commits.done('events', 0, '4');
    commits.done('events', 0, '9');
    commits.done('events', 1, '2');
    expect(kafka.commits).toEqual([]);
    await sleep(80);
    expect(kafka.commits).toEqual([
      [
        { topic: 'events', partition: 0, offset: '10' },
        { topic: 'events', partition: 1, offset: '3' },
      ],
    ]);
    await sleep(80);
    expect(kafka.commits).toHaveLength(1); // nothing new: no request
    await commits.close();
  });

  it('commits what is pending when closed, and nothing after', async () => {
    const kafka = consumer();
    const commits = new ThrottledCommits(kafka, 60_000, quiet);
    commits.done('retry.1', 2, '41');
    await commits.close();
    expect(kafka.commits).toEqual([[{ topic: 'retry.1', partition: 2, offset: '42' }]]);
    commits.done('retry.1', 2, '50');
    await sleep(20);
    expect(kafka.commits).toHaveLength(1);
  });

  it('knows each partition’s progress before its commit lands, and after', async () => {
    const commits = new ThrottledCommits(consumer(), 60_000, quiet);
    expect(commits.nextOffset('retry.1', 0)).toBeUndefined();
    commits.done('retry.1', 0, '11');
    expect(commits.nextOffset('retry.1', 0)).toBe('12');
    await commits.flush();
    expect(commits.nextOffset('retry.1', 0)).toBe('12');
    await commits.close();
  });

  it('forgets what is pending, and the progress it knew, after a rebalance', async () => {
    const kafka = consumer();
    const commits = new ThrottledCommits(kafka, 60_000, quiet);
    commits.done('events', 0, '7');
    commits.forget();
    expect(commits.nextOffset('events', 0)).toBeUndefined();
    await commits.close();
    expect(kafka.commits).toEqual([]);
  });

  it('sends a partition’s commits in order, one after the other, and survives a failed one', async () => {
    const kafka = consumer(30, new Set([0]));
    const logged: unknown[] = [];
    const commits = new ThrottledCommits(kafka, 60_000, { debug: (...args: unknown[]) => void logged.push(args) });
    commits.done('events', 0, '1');
    const first = commits.flush();
    commits.done('events', 0, '5');
    const second = commits.flush(); // waits for the first, which fails
    await Promise.all([first, second]);
    expect(kafka.commits).toEqual([[{ topic: 'events', partition: 0, offset: '6' }]]);
    expect(logged).toHaveLength(1);
    await commits.close();
  });
});
