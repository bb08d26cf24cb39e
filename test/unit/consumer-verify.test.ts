// The verifier with fake runners of named workers: outputs are tiny PNGs whose pixels say who
// computed them, so agreement, the tie-break, strikes and waiting can be checked without a model.
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../common/logger.js';
import type { VerifyPolicy } from '../../common/models.js';
import { psnr } from '../../consumer/remote/compare.js';
import { RunnerPool, type PoolRunner } from '../../consumer/pool.js';
import type { RunnerOutcome, RunRequest } from '../../consumer/run.js';
import { Verifier, type WorkerLedger } from '../../consumer/remote/verify.js';

const png = (value: number) => sharp({ create: { width: 8, height: 8, channels: 3, background: { r: value, g: value, b: value } } }).png().toBuffer();
const params = { prompt: 'p', negative_prompt: null, strength: 0.5, steps: 2, guidance_scale: 1, seed: 1 };

function fakeWorker(worker: string, value: number): PoolRunner & { ran: string[] } {
  const ran: string[] = [];
  return {
    worker, ran, pending: 0, capacity: 2, running: true,
    async run({ id }: RunRequest): Promise<RunnerOutcome> {
      ran.push(id);
      const result = { v: 1 as const, type: 'result' as const, id, width: 8, height: 8, batch_size: 1, timings: { decode_s: 0, compute_s: 0, encode_s: 0 }, peak_memory_bytes: 0, notes: [] };
      return { ok: true, image: await png(value), result };
    },
    cancel() {},
    async stop() {},
  };
}

function ledger() {
  const strikes: string[] = [];
  const unverified: string[] = [];
  const evicted = new Set<string>();
  const value: WorkerLedger = {
    accepted: (worker, job, verified) => void (verified || unverified.push(`${worker}:${job}`)),
    strike: async (worker) => void strikes.push(worker),
    evicted: (worker) => evicted.has(worker),
  };
  return { value, strikes, unverified, evicted };
}

const verifier = (pool: RunnerPool, policy: VerifyPolicy, l: WorkerLedger, random = Math.random) =>
  new Verifier(pool, policy, l, 40, createLogger('test', 'silent'), random);

describe('Verifier', () => {
  it('all:2 keeps a result two distinct workers agree on', async () => {
    const [a, b] = [fakeWorker('a', 100), fakeWorker('b', 100)];
    const l = ledger();
    const outcome = await verifier(new RunnerPool([a, b]), { kind: 'all' }, l.value).run({ id: 'j1', params: params, image: new Uint8Array() });
    expect(outcome).toMatchObject({ ok: true, verification: { policy: 'all:2', state: 'verified', workers: ['a', 'b'], outvoted: [] } });
    expect(l.strikes).toEqual([]);
  });

  it('all:2 asks a third worker when two disagree, keeps the majority and strikes the liar', async () => {
    const [honest1, liar, honest2] = [fakeWorker('h1', 100), fakeWorker('liar', 155), fakeWorker('h2', 100)];
    const l = ledger();
    const outcome = await verifier(new RunnerPool([honest1, liar, honest2]), { kind: 'all' }, l.value).run({ id: 'j1', params: params, image: new Uint8Array() });
    expect(outcome.ok).toBe(true);
    expect(outcome.worker).not.toBe('liar');
    expect(outcome.verification).toMatchObject({ state: 'verified', outvoted: ['liar'] });
    expect(l.strikes).toEqual(['liar']);
    expect(await psnr((outcome as { image: Buffer }).image, await png(100))).toBe(Infinity);
  });

  it('all:2 waits, and says so, until a second distinct worker joins', async () => {
    const pool = new RunnerPool([fakeWorker('a', 100)]);
    let waits = 0;
    let waiting!: () => void;
    const waited = new Promise<void>((resolve) => (waiting = resolve));
    const onWait = () => {
      waits++;
      waiting();
    };
    const running = verifier(pool, { kind: 'all' }, ledger().value).run({ id: 'j1', params: params, image: new Uint8Array() }, { onWait });
    await waited;
    pool.add(fakeWorker('b', 100));
    expect(await running).toMatchObject({ ok: true, verification: { state: 'verified', workers: ['a', 'b'] } });
    expect(waits).toBe(1);
  });

  it('spot:P checks the drawn fraction only, and reports unchecked results to the ledger', async () => {
    const [a, b] = [fakeWorker('a', 100), fakeWorker('b', 100)];
    const l = ledger();
    const draws = [0.05, 0.5];
    const v = verifier(new RunnerPool([a, b]), { kind: 'spot', fraction: 0.1 }, l.value, () => draws.shift()!);
    expect((await v.run({ id: 'checked', params: params, image: new Uint8Array() })).verification?.state).toBe('verified');
    expect((await v.run({ id: 'single', params: params, image: new Uint8Array() })).verification?.state).toBe('single');
    expect(l.unverified).toHaveLength(1);
  });

  it('spot:P drops an unchecked result of a worker evicted while it ran, and runs the job elsewhere', async () => {
    const [liar, honest] = [fakeWorker('liar', 0), fakeWorker('honest', 100)];
    const l = ledger();
    // Outvoted on another job while this one runs: evicted before its result comes back.
    const run = liar.run.bind(liar);
    liar.run = async (...args) => {
      const outcome = await run(...args);
      l.evicted.add('liar');
      return outcome;
    };
    const pool = new RunnerPool([liar, honest]);
    const v = verifier(pool, { kind: 'spot', fraction: 0.1 }, l.value, () => 0.5);
    const outcome = await v.run({ id: 'j1', params: params, image: new Uint8Array() });
    expect(liar.ran).toEqual(['j1']);
    expect(honest.ran).toEqual(['j1']);
    expect(outcome).toMatchObject({ ok: true, worker: 'honest', verification: { state: 'single', workers: ['honest'] } });
    expect(l.unverified).toEqual(['honest:j1']);
  });

  it('fails the attempt (retryable) when no two of three agree', async () => {
    const pool = new RunnerPool([fakeWorker('a', 0), fakeWorker('b', 120), fakeWorker('c', 250)]);
    expect(await verifier(pool, { kind: 'all' }, ledger().value).run({ id: 'j1', params: params, image: new Uint8Array() })).toMatchObject({
      ok: false, code: 'unverified', retryable: true,
    });
  });
});

describe('psnr', () => {
  it('is infinite for equal pixels, low for an inverted image, and -Infinity for another size', async () => {
    expect(await psnr(await png(10), await png(10))).toBe(Infinity);
    expect(await psnr(await png(10), await png(245))).toBeLessThan(10);
    const small = await sharp({ create: { width: 4, height: 4, channels: 3, background: 'black' } }).png().toBuffer();
    expect(await psnr(await png(0), small)).toBe(-Infinity);
  });
});
