// How often a job's progress reaches its record: a second into the run and every second
// after, never at the last step (the success write records every step). Fakes stand in for
// storage, Kafka and the runner: only the write pattern of JobRun is under test.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { JobRecord } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';
import type { Transition } from '../../common/lifecycle.js';
import { JobRun, type Received, type JobDeps } from '../../consumer/job.js';
import type { RunRequest } from '../../consumer/run.js';

const ID = 'q0vN3rJ8T6yWm1bXc2dEfA';
const params = { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 };
const t0 = new Date('2026-01-01T00:00:00.000Z').getTime();

/** A JobRun's dependencies as fakes; each test replaces the parts it watches. */
function fakeDeps(parts: Record<string, unknown>): JobDeps {
  return {
    publisher: { publishEvent: async () => {}, send: async () => {} },
    config: { MAX_ATTEMPTS: 3 },
    store: { getBytes: async () => Buffer.from('input'), put: async () => 'etag' },
    pool: { cancel() {} },
    model: { name: 'tiny' },
    logger: { warn() {}, error() {}, info() {}, debug() {} },
    dlq: 'dlq',
    ...parts,
  } as unknown as JobDeps;
}

/** The job's message as the worker received it from the high topic. */
const receivedJob = (): Received => ({
  topic: 'jobs.tiny.high',
  partition: 0,
  offset: '0',
  priority: 'high',
  raw: null,
  message: { v: 1, id: ID, model_name: 'tiny', priority: 'high', created_at: new Date(t0).toISOString() },
  problem: undefined,
  attempt: 0,
});

/** Runs one job whose runner reports `steps` steps, one every `stepMs`; returns the record writes in order. */
async function runJob(steps: number, stepMs: number): Promise<JobRecord[]> {
  let record = lifecycle.queued({ id: ID, model_name: 'tiny', priority: 'high', params, width: 64, height: 64, input_key: `jobs/${ID}/input.png`, idempotency: null }).record;
  const writes: JobRecord[] = [];
  const records = {
    get: async () => record,
    apply: async (_id: string, transition: (current: JobRecord) => Transition | undefined) => {
      const next = transition(structuredClone(record));
      if (!next) return { record, event: undefined };
      record = next.record;
      writes.push(record);
      return { record, event: next.event };
    },
  };
  const verifier = {
    run: async ({ callbacks }: RunRequest) => {
      callbacks!.onStarted!(1);
      for (let step = 1; step <= steps; step++) {
        vi.setSystemTime(Date.now() + stepMs);
        callbacks!.onProgress!(step, steps);
      }
      const result = { v: 1, type: 'result', id: ID, batch_size: 1, peak_memory_bytes: 0, timings: { compute_s: (steps * stepMs) / 1000 } };
      return { ok: true, image: Buffer.from('png'), result };
    },
  };
  const deps = fakeDeps({ records, verifier });
  const received = receivedJob();
  const verdict = await new JobRun(received, deps).execute();
  expect(verdict).toMatchObject({ kind: 'done', status: 'succeeded' });
  return writes;
}

const progressWrites = (writes: JobRecord[]) => writes.filter((r) => r.status === 'running' && r.progress).map((r) => r.progress!.step);

describe('JobRun progress in the record', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(t0);
  });
  afterEach(() => vi.useRealTimers());

  it('a job of under a second writes start, success and received only', async () => {
    const writes = await runJob(15, 60); // 0.9 s
    expect(writes.map((r) => r.status)).toEqual(['running', 'succeeded', 'succeeded']);
    expect(writes[1]!.progress).toEqual({ step: 15, total: 15 }); // the success write records every step
  });

  it('a longer job writes its progress a second into the run and every second after, not at the last step', async () => {
    const writes = await runJob(15, 250); // steps at 0.25 s, 0.5 s, ... 3.75 s
    expect(progressWrites(writes)).toEqual([4, 8, 12]);
    expect(writes.at(-1)).toMatchObject({ status: 'succeeded', progress: { step: 15, total: 15 } });
  });
});

describe('JobRun of a message whose record was never written', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(t0);
  });
  afterEach(() => vi.useRealTimers());

  it('skips it as abandoned: no dead letter, no failed job', async () => {
    const sent: string[] = [];
    const deps = fakeDeps({
      publisher: { publishEvent: async () => {}, send: async (topic: string) => void sent.push(topic) },
      // Each read finds nothing, and two seconds pass: the record wait runs out after a few reads.
      records: { get: async () => void vi.setSystemTime(Date.now() + 2000), apply: async () => ({ record: undefined }) },
    });
    const received = receivedJob();
    const verdict = await new JobRun(received, deps).execute();
    expect(verdict).toEqual({ kind: 'done', status: 'abandoned', record: undefined, deadLettered: false });
    expect(sent).toEqual([]);
  });
});

describe('JobRun of a message read before the API stored its input and record', () => {
  it('reads the input again once the record is there, and runs the job', async () => {
    // The API stores the input beside producing the message and writes the record after both:
    // the first reads of a fast consumer find neither.
    let record: JobRecord | undefined;
    let input: Buffer | undefined;
    const storeAfterTwoReads = () => {
      input = Buffer.from('input');
      record = lifecycle.queued({ id: ID, model_name: 'tiny', priority: 'high', params, width: 64, height: 64, input_key: `jobs/${ID}/input.png`, idempotency: null }).record;
    };
    let reads = 0;
    const records = {
      get: async () => (++reads === 2 && storeAfterTwoReads(), reads > 2 ? record : undefined),
      apply: async (_id: string, transition: (current: JobRecord) => Transition | undefined) => {
        const next = transition(structuredClone(record!));
        if (next) record = next.record;
        return { record, event: next?.event };
      },
    };
    const handed: Uint8Array[] = [];
    const verifier = {
      run: async ({ image, callbacks }: RunRequest) => {
        handed.push(image);
        callbacks!.onStarted!(1);
        return { ok: true, image: Buffer.from('png'), result: { v: 1, type: 'result', id: ID, batch_size: 1, peak_memory_bytes: 0, timings: { compute_s: 0.01 } } };
      },
    };
    const store = { getBytes: async () => input, put: async () => 'etag' };
    const verdict = await new JobRun(receivedJob(), fakeDeps({ records, verifier, store })).execute();
    expect(verdict).toMatchObject({ kind: 'done', status: 'succeeded' });
    expect(handed.map((bytes) => Buffer.from(bytes).toString())).toEqual(['input']);
  });
});

describe('JobRun of a job that waits in its runner', () => {
  it('stays queued until the runner starts it, then is running with its attempt', async () => {
    let record = lifecycle.queued({ id: ID, model_name: 'tiny', priority: 'high', params, width: 64, height: 64, input_key: `jobs/${ID}/input.png`, idempotency: null }).record;
    const seen: string[] = [];
    const events: string[] = [];
    const records = {
      get: async () => record,
      apply: async (_id: string, transition: (current: JobRecord) => Transition | undefined) => {
        const next = transition(structuredClone(record));
        if (next) record = next.record;
        return { record, event: next?.event };
      },
    };
    const verifier = {
      run: async ({ callbacks, priority, pixels }: RunRequest) => {
        seen.push(`handed over: ${record.status}, ${priority}, ${pixels} px`);
        await new Promise((resolve) => setTimeout(resolve, 20)); // a batch computes ahead of it
        seen.push(`still waiting: ${record.status}`);
        callbacks!.onStarted!(1);
        callbacks!.onProgress!(1, 2);
        await new Promise((resolve) => setTimeout(resolve, 20));
        seen.push(`after its start: ${record.status}, attempt ${record.attempts}`);
        callbacks!.onProgress!(2, 2);
        return { ok: true, image: Buffer.from('png'), result: { v: 1, type: 'result', id: ID, batch_size: 1, peak_memory_bytes: 0, timings: { compute_s: 0.02 } } };
      },
    };
    const deps = fakeDeps({ publisher: { publishEvent: async (event: { type: string }) => void events.push(event.type), send: async () => {} }, records, verifier });
    const received = receivedJob();
    const verdict = await new JobRun(received, deps).execute();
    expect(verdict).toMatchObject({ kind: 'done', status: 'succeeded' });
    expect(seen).toEqual(['handed over: queued, high, 4096 px', 'still waiting: queued', 'after its start: running, attempt 1']);
    expect(events.filter((type) => type !== 'progress')).toEqual(['started', 'succeeded']);
    expect(events.indexOf('started')).toBeLessThan(events.indexOf('progress'));
  });
});

describe('JobRun of a job with a deadline', () => {
  /** A record store over one record; `verifier` stands in for the runner. */
  function deadlineRun(deadlines: JobRecord['deadlines'], verifier: { cancel?: () => void }) {
    const queued = lifecycle.queued({ id: ID, model_name: 'tiny', priority: 'high', params, width: 64, height: 64, input_key: `jobs/${ID}/input.png`, idempotency: null, deadlines });
    let record = queued.record;
    const published: string[] = [];
    const records = {
      get: async () => record,
      apply: async (_id: string, transition: (current: JobRecord) => Transition | undefined) => {
        const next = transition(structuredClone(record));
        if (next) record = next.record;
        return { record, event: next?.event };
      },
    };
    const publisher = { publishEvent: async (event: { type: string }) => void published.push(event.type), send: async () => {} };
    const pool = { cancel: () => verifier.cancel?.() };
    const run = new JobRun(receivedJob(), fakeDeps({ records, verifier, publisher, pool }));
    return { run, record: () => record, published };
  }

  it('past its start deadline it ends aborted without reaching a runner', async () => {
    let handedOver = false;
    const past = new Date(Date.now() - 1000).toISOString();
    const { run, record, published } = deadlineRun({ start_by: past, cancel_at: null }, { run: async () => void (handedOver = true) } as never);
    expect(await run.execute()).toMatchObject({ kind: 'done', status: 'aborted' });
    expect(handedOver).toBe(false);
    expect(record()).toMatchObject({ status: 'aborted', started_at: null, error: { code: 'deadline_exceeded' } });
    expect(record().error!.message).toBe(`not started by its deadline ${past}: aborted before it reached a runner (no GPU time spent)`);
    expect(published).toEqual(['aborted']);
  });

  it('a start deadline still ahead lets it run', async () => {
    const ahead = new Date(Date.now() + 60_000).toISOString();
    const verifier = { run: async ({ callbacks }: RunRequest) => (callbacks!.onStarted!(1), { ok: true, image: Buffer.from('png'), result: { batch_size: 1, peak_memory_bytes: 0, timings: { compute_s: 0.01 }, notes: [] } }) };
    const { run, record } = deadlineRun({ start_by: ahead, cancel_at: null }, verifier as never);
    expect(await run.execute()).toMatchObject({ kind: 'done', status: 'succeeded' });
    expect(record().status).toBe('succeeded');
  });

  /** A runner that starts the job (or not) and then runs until it is canceled. */
  const runsUntilCanceled = (starts: boolean) => {
    let stop!: (outcome: unknown) => void;
    return {
      run: ({ callbacks }: RunRequest) => {
        if (starts) callbacks!.onStarted!(1);
        return new Promise((resolve) => (stop = resolve));
      },
      cancel: () => stop({ ok: false, code: 'canceled', retryable: false, message: 'canceled' }),
    };
  };

  it('running at its cancel_at, it is canceled at the next step with the deadline as its reason', async () => {
    const runner = runsUntilCanceled(true);
    const cancelAt = new Date(Date.now() + 150).toISOString();
    const { run, record, published } = deadlineRun({ start_by: null, cancel_at: cancelAt }, runner);
    expect(await run.execute()).toMatchObject({ kind: 'done', status: 'canceled' });
    expect(record()).toMatchObject({ status: 'canceled', error: { code: 'deadline_exceeded', message: `still running at its deadline ${cancelAt} (Cancel-After): canceled` } });
    expect(published).toEqual(['started', 'canceled']);
  });

  it('still waiting in its runner at its cancel_at, it ends aborted', async () => {
    const runner = runsUntilCanceled(false);
    const { run, record, published } = deadlineRun({ start_by: null, cancel_at: new Date(Date.now() + 150).toISOString() }, runner);
    expect(await run.execute()).toMatchObject({ kind: 'done', status: 'aborted' });
    expect(record()).toMatchObject({ status: 'aborted', started_at: null, error: { code: 'deadline_exceeded' } });
    expect(published).toEqual(['aborted']);
  });
});

describe('JobRun of a job whose message carries its record', () => {
  const queuedRecord = () => lifecycle.queued({ id: ID, model_name: 'tiny', priority: 'high', params, width: 64, height: 64, input_key: `jobs/${ID}/input.png`, idempotency: null }).record;
  const handedJob = (extra: Partial<Received> = {}): Received => {
    const received = receivedJob();
    return { ...received, message: { ...received.message!, record: queuedRecord() }, ...extra };
  };
  /** A record store whose record the API writes when `write()` is called; reads are counted. */
  function apiWritesLater() {
    let stored: JobRecord | undefined;
    const calls: string[] = [];
    const records = {
      handOver: () => true,
      get: async () => (calls.push('get'), stored),
      apply: async (_id: string, transition: (current: JobRecord) => Transition | undefined) => {
        calls.push(stored ? 'write' : 'write (no record)');
        if (!stored) return { record: undefined, event: undefined };
        const next = transition(structuredClone(stored));
        if (next) stored = next.record;
        return { record: stored, event: next?.event };
      },
    };
    return { records, calls, write: (record = queuedRecord()) => (stored = record), stored: () => stored };
  }
  const result = { v: 1, type: 'result', id: ID, batch_size: 1, peak_memory_bytes: 0, timings: { compute_s: 0.01 } };

  it('goes to its runner before its record is read, and starts once the record is written', async () => {
    const api = apiWritesLater();
    const verifier = {
      run: async ({ callbacks }: RunRequest) => {
        api.calls.push('runner has it');
        callbacks!.onStarted!(1);
        await new Promise((resolve) => setTimeout(resolve, 5));
        api.write(); // the API's record write lands after the runner started the job
        return { ok: true, image: Buffer.from('png'), result };
      },
    };
    const verdict = await new JobRun(handedJob(), fakeDeps({ records: api.records, verifier })).execute();
    expect(verdict).toMatchObject({ kind: 'done', status: 'succeeded' });
    expect(api.calls.slice(0, 3)).toEqual(['runner has it', 'write (no record)', 'get']);
    expect(api.calls.filter((call) => call === 'write')).toHaveLength(3); // the start, the success, the outbox
    expect(api.stored()).toMatchObject({ status: 'succeeded', attempts: 1 });
  });

  it('with its record written already, reads nothing', async () => {
    const api = apiWritesLater();
    api.write();
    const verifier = { run: async ({ callbacks }: RunRequest) => (callbacks!.onStarted!(1), { ok: true, image: Buffer.from('png'), result }) };
    const verdict = await new JobRun(handedJob(), fakeDeps({ records: api.records, verifier })).execute();
    expect(verdict).toMatchObject({ kind: 'done', status: 'succeeded' });
    expect(api.calls).not.toContain('get');
  });

  it('whose record is never written is abandoned, and its runner drops it', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const api = apiWritesLater();
    api.records.get = async () => (vi.setSystemTime(Date.now() + 2000), undefined); // the wait runs out after a few reads
    let stop!: (outcome: unknown) => void;
    const verifier = { run: ({ callbacks }: RunRequest) => (callbacks!.onStarted!(1), new Promise((resolve) => (stop = resolve))) };
    const canceled: string[] = [];
    const pool = { cancel: (id: string) => (canceled.push(id), stop({ ok: false, code: 'canceled', retryable: false, message: 'canceled' })) };
    try {
      const verdict = await new JobRun(handedJob(), fakeDeps({ records: api.records, verifier, pool })).execute();
      expect(verdict).toEqual({ kind: 'done', status: 'abandoned', record: undefined, deadLettered: false });
      expect(canceled).toEqual([ID]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('whose record was canceled meanwhile is dropped by its runner at the start', async () => {
    const api = apiWritesLater();
    api.write(lifecycle.cancel(queuedRecord())!.record);
    const canceled: string[] = [];
    let stop!: (outcome: unknown) => void;
    const verifier = { run: ({ callbacks }: RunRequest) => (callbacks!.onStarted!(1), new Promise((resolve) => (stop = resolve))) };
    const pool = { cancel: (id: string) => (canceled.push(id), stop({ ok: false, code: 'canceled', retryable: false, message: 'canceled' })) };
    const verdict = await new JobRun(handedJob(), fakeDeps({ records: api.records, verifier, pool })).execute();
    expect(verdict).toMatchObject({ kind: 'done', status: 'skipped_canceled' });
    expect(canceled).toEqual([ID]);
    expect(api.stored()).toMatchObject({ status: 'canceled', attempts: 0 });
  });

  it('whose cancel request came first reads its record and never reaches a runner', async () => {
    const api = apiWritesLater();
    api.write(lifecycle.cancel(queuedRecord())!.record);
    let handedOver = false;
    const verifier = { run: async () => void (handedOver = true) };
    const verdict = await new JobRun(handedJob({ cancelRequested: true }), fakeDeps({ records: api.records, verifier })).execute();
    expect(verdict).toMatchObject({ kind: 'done', status: 'skipped_canceled' });
    expect(handedOver).toBe(false);
    expect(api.calls[0]).toBe('get');
  });
});
