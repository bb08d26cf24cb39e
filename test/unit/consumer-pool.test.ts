import { describe, expect, it } from 'vitest';
import { RunnerPool } from '../../consumer/pool.js';
import type { RunnerOutcome, RunRequest } from '../../consumer/run.js';
import type { Runner } from '../../consumer/runner.js';

/** A runner that holds its jobs until told to finish them. */
function fakeRunner(name: string) {
  const jobs = new Map<string, (outcome: RunnerOutcome) => void>();
  const canceled: string[] = [];
  const fake = {
    name,
    canceled,
    capacity: 2,
    running: true,
    get pending() {
      return jobs.size;
    },
    run: ({ id }: RunRequest) => new Promise<RunnerOutcome>((resolve) => jobs.set(id, resolve)),
    cancel: (id: string) => void canceled.push(id),
    stop: async () => {},
    finish(id: string) {
      jobs.get(id)?.({ ok: false, code: 'canceled', retryable: false, message: '' });
      jobs.delete(id);
    },
    holds: (id: string) => jobs.has(id),
  };
  return fake;
}

describe('RunnerPool', () => {
  it('sends each job to the runner with the fewest jobs and cancels on the right one', async () => {
    const gpu0 = fakeRunner('gpu0');
    const gpu1 = fakeRunner('gpu1');
    const pool = new RunnerPool([gpu0, gpu1] as unknown as Runner[]);
    const params = { prompt: 'p', negative_prompt: null, strength: 0.5, steps: 2, guidance_scale: 1, seed: 1 };
    const a = pool.run({ id: 'a', params: params, image: new Uint8Array() });
    const b = pool.run({ id: 'b', params: params, image: new Uint8Array() });
    expect([gpu0.holds('a'), gpu1.holds('b')]).toEqual([true, true]);
    gpu0.finish('a');
    await a;
    void pool.run({ id: 'c', params: params, image: new Uint8Array() });
    expect(gpu0.holds('c')).toBe(true);
    pool.cancel('b');
    expect([gpu0.canceled, gpu1.canceled]).toEqual([[], ['b']]);
    expect(pool.capacity).toBe(4);
    gpu1.finish('b');
    await b;
  });
});

describe('RunnerPool.pick', () => {
  it('spreads a burst of picks made before any job starts, and skips excluded workers', () => {
    const a = { ...fakeRunner('a'), worker: 'a' };
    const b = { ...fakeRunner('b'), worker: 'b' };
    const pool = new RunnerPool([a, b] as unknown as Runner[]);
    const picked = [pool.pick(), pool.pick(), pool.pick(), pool.pick()].map((r) => (r as unknown as { worker: string }).worker);
    expect(picked.sort()).toEqual(['a', 'a', 'b', 'b']);
    expect((pool.pick({ exclude: new Set(['a']) }) as unknown as { worker: string }).worker).toBe('b');
  });
});
