// Every lifecycle transition, and every one refused, on plain records.
import { describe, expect, it } from 'vitest';
import type { JobRecord, JobStatus } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';

const t0 = new Date('2026-01-01T00:00:00.000Z');
const at = (seconds: number) => ({ now: new Date(t0.getTime() + seconds * 1000) });
const params = { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 };

function newRecord(): JobRecord {
  return lifecycle.queued(
    { id: 'q0vN3rJ8T6yWm1bXc2dEfA', model_name: 'tiny', priority: 'high', params, width: 64, height: 48, input_key: 'jobs/x/input.png', idempotency: null },
    { now: t0 },
  ).record;
}

const inState = (status: JobStatus, extra: Partial<JobRecord> = {}): JobRecord => ({ ...newRecord(), status, ...extra });
const ALL: JobStatus[] = ['queued', 'running', 'succeeded', 'failed', 'canceled', 'aborted'];
const error = { code: 'runner_crashed', message: 'runner exited' };
const outcome = { output_key: 'jobs/x/output.png', peak_memory_bytes: 1234, compute_s: 0.5 };

describe('lifecycle', () => {
  it('queued: a fresh record and its queued event', () => {
    const { record, event } = lifecycle.queued(
      { id: 'a', model_name: 'tiny', priority: 'low', params, width: 8, height: 8, input_key: 'k', idempotency: null },
      { now: t0 },
    );
    expect(record).toMatchObject({ v: 1, id: 'a', status: 'queued', attempts: 0, created_at: t0.toISOString(), output_key: null, error: null, cancel_requested: false });
    expect(event).toEqual({ v: 1, id: 'a', type: 'queued', at: t0.toISOString(), model_name: 'tiny' });
  });

  it('start: counts the attempt, keeps the first start time, announces it', () => {
    const first = lifecycle.start(newRecord(), at(2))!;
    expect(first.record).toMatchObject({ status: 'running', attempts: 1, started_at: at(2).now.toISOString(), progress: null });
    expect(first.event).toMatchObject({ type: 'started', attempt: 1 });
    const again = lifecycle.start(lifecycle.requeue(first.record, error, at(3))!.record, at(4))!;
    expect(again.record).toMatchObject({ attempts: 2, started_at: at(2).now.toISOString() });
  });

  it('start: resuming an attempt that storage or Kafka interrupted does not count another', () => {
    const running = lifecycle.start(newRecord(), at(1))!.record;
    const resumed = lifecycle.start(running, { ...at(2), resume: true })!;
    expect(resumed.record).toMatchObject({ status: 'running', attempts: 1, started_at: at(1).now.toISOString() });
    expect(lifecycle.start(running, at(2))!.record.attempts).toBe(2);
  });

  it('requeue: back to queued with the reason, and nothing announced', () => {
    const next = lifecycle.requeue(inState('running', { progress: { step: 3, total: 10 } }), error, at(1))!;
    expect(next.record).toMatchObject({ status: 'queued', error, progress: null });
    expect(next.event).toBeUndefined();
  });

  it('progress: recorded and announced while running only', () => {
    const next = lifecycle.progress(inState('running'), 3, 10, at(1))!;
    expect(next.record.progress).toEqual({ step: 3, total: 10 });
    expect(next.event).toMatchObject({ type: 'progress', step: 3, total: 10 });
    for (const status of ALL.filter((s) => s !== 'running')) expect(lifecycle.progress(inState(status), 1, 2), status).toBeUndefined();
  });

  it('succeed: output, timings from the record, the last step', () => {
    const running = lifecycle.start(newRecord(), at(2))!.record;
    const next = lifecycle.succeed({ ...running, progress: { step: 7, total: 10 } }, outcome, at(5))!;
    expect(next.record).toMatchObject({
      status: 'succeeded',
      output_key: outcome.output_key,
      peak_memory_bytes: 1234,
      finished_at: at(5).now.toISOString(),
      progress: { step: 10, total: 10 },
      error: null,
      timings: { queue_s: 2, run_s: 3, total_s: 5, compute_s: 0.5 },
    });
    expect(next.event).toMatchObject({ type: 'succeeded' });
  });

  it('succeed: the step count of the run ends the progress, recorded or not', () => {
    const running = lifecycle.start(newRecord(), at(2))!.record;
    expect(lifecycle.succeed(running, { ...outcome, total_steps: 15 }, at(3))!.record.progress).toEqual({ step: 15, total: 15 });
    expect(lifecycle.succeed(running, outcome, at(3))!.record.progress).toBeNull(); // no step ever reported
  });

  it('succeed: the runner’s notes are kept, and a run without any adds no field', () => {
    const running = lifecycle.start(newRecord(), at(2))!.record;
    const note = 'prompt: 93 tokens for CLIPTokenizer, which reads 77: the rest was left out';
    expect(lifecycle.succeed(running, { ...outcome, notes: [note] }, at(3))!.record.notes).toEqual([note]);
    expect('notes' in lifecycle.succeed(running, { ...outcome, notes: [] }, at(3))!.record).toBe(false);
  });

  it('abortIfLate: a queued job that never started, at or past the earlier of its deadlines', () => {
    const deadlines = { start_by: at(10).now.toISOString(), cancel_at: at(5).now.toISOString() };
    const late = lifecycle.abortIfLate(inState('queued', { deadlines }), at(5))!;
    expect(late.record).toMatchObject({ status: 'aborted', finished_at: at(5).now.toISOString(), error: { code: 'deadline_exceeded' } });
    expect(late.record.outbox).toEqual([late.event]);
    expect(lifecycle.endingOf(late.record)).toMatchObject({ type: 'aborted', error: { code: 'deadline_exceeded' } });
    expect(lifecycle.abortIfLate(inState('queued', { deadlines }), at(4))).toBeUndefined(); // still in time
    expect(lifecycle.abortIfLate(inState('queued'), at(100))).toBeUndefined(); // no deadline
    // Started once (then re-queued by a failed attempt): its start deadline was met.
    expect(lifecycle.abortIfLate(inState('queued', { deadlines, started_at: at(1).now.toISOString() }), at(6))).toBeUndefined();
    for (const status of ALL.filter((s) => s !== 'queued')) expect(lifecycle.abortIfLate(inState(status, { deadlines }), at(6)), status).toBeUndefined();
  });

  it('cancelAtDeadline: canceled with the deadline as its reason; without one, as cancel', () => {
    const deadlines = { start_by: null, cancel_at: at(5).now.toISOString() };
    const next = lifecycle.cancelAtDeadline(inState('running', { deadlines }), at(5))!;
    expect(next.record).toMatchObject({ status: 'canceled', error: { code: 'deadline_exceeded' } });
    expect(next.record.outbox).toEqual([next.event]);
    expect(next.event).toMatchObject({ type: 'canceled', error: { code: 'deadline_exceeded' } });
    expect(lifecycle.cancelAtDeadline(inState('running'), at(5))!.record.error).toBeNull();
  });

  it('cancel: from queued or running, keeping how far it got', () => {
    for (const status of ['queued', 'running'] as const) {
      const next = lifecycle.cancel(inState(status, { progress: { step: 1, total: 2 } }), at(1))!;
      expect(next.record).toMatchObject({ status: 'canceled', finished_at: at(1).now.toISOString(), progress: { step: 1, total: 2 } });
      expect(next.record.outbox).toEqual([next.event]);
      expect(lifecycle.cancel(inState(status, { error }))!.record.error).toBeNull(); // an earlier attempt's error is not why it ended
      expect(next.event).toMatchObject({ type: 'canceled' });
    }
  });

  it('requestCancel: a running job once; a queued one is canceled instead', () => {
    const next = lifecycle.requestCancel(inState('running'), at(1))!;
    expect(next.record).toMatchObject({ status: 'running', cancel_requested: true });
    expect(next.event).toMatchObject({ type: 'cancel_requested' });
    expect(lifecycle.requestCancel(next.record)).toBeUndefined();
    expect(lifecycle.requestCancel(inState('queued'))).toBeUndefined();
  });

  it('cancelOrRequest: a queued job is canceled, a running one asked to stop, an ended one left alone', () => {
    expect(lifecycle.cancelOrRequest(inState('queued'))?.record.status).toBe('canceled');
    expect(lifecycle.cancelOrRequest(inState('running'))?.record).toMatchObject({ status: 'running', cancel_requested: true });
    for (const status of ['succeeded', 'failed', 'canceled'] as const) expect(lifecycle.cancelOrRequest(inState(status))).toBeUndefined();
  });

  it('waitForWorkers: a live job says what it waits for, without an event; an ended one is left alone', () => {
    for (const status of ['queued', 'running'] as const) {
      const next = lifecycle.waitForWorkers(inState(status), 'all:2');
      expect(next).toEqual({ record: { ...inState(status), verification: { policy: 'all:2', state: 'waiting_for_workers', workers: [], outvoted: [] } } });
    }
    expect(lifecycle.waitForWorkers(inState('succeeded'), 'all:2')).toBeUndefined();
  });

  it('succeed: records who computed the result and how it was checked, in the same write', () => {
    const verification = { policy: 'all:2', state: 'verified' as const, workers: ['a', 'b'], outvoted: [] };
    const { record } = lifecycle.succeed(inState('running'), { ...outcome, worker: 'a', verification })!;
    expect(record).toMatchObject({ status: 'succeeded', worker: 'a', verification });
  });

  it('fail: with the reason, from queued or running', () => {
    for (const status of ['queued', 'running'] as const) {
      const next = lifecycle.fail(inState(status), error, at(1))!;
      expect(next.record).toMatchObject({ status: 'failed', error, finished_at: at(1).now.toISOString() });
      expect(next.event).toEqual({ v: 1, id: next.record.id, type: 'failed', at: at(1).now.toISOString(), model_name: 'tiny', error });
    }
  });

  it('keeps each ending in the outbox until delivered', () => {
    const ended = lifecycle.succeed(lifecycle.start(newRecord())!.record, outcome)!;
    expect(ended.record.outbox).toEqual([ended.event]);
    const cleared = lifecycle.delivered(ended.record, [ended.event!])!;
    expect(cleared.record.outbox).toEqual([]);
    expect(cleared.event).toBeUndefined();
    expect(lifecycle.delivered(cleared.record, [ended.event!])).toBeUndefined();
    expect(lifecycle.fail(inState('queued'), error)!.record.outbox).toHaveLength(1);
  });

  it('refuses every change of a job that ended', () => {
    for (const status of ['succeeded', 'failed', 'canceled'] as const) {
      const ended = inState(status);
      expect(lifecycle.isTerminal(ended)).toBe(true);
      expect(lifecycle.start(ended), status).toBeUndefined();
      expect(lifecycle.requeue(ended, error), status).toBeUndefined();
      expect(lifecycle.progress(ended, 1, 2), status).toBeUndefined();
      expect(lifecycle.succeed(ended, outcome), status).toBeUndefined();
      expect(lifecycle.cancel(ended), status).toBeUndefined();
      expect(lifecycle.requestCancel(ended), status).toBeUndefined();
      expect(lifecycle.fail(ended, error), status).toBeUndefined();
    }
  });

  it('never changes the record it was given', () => {
    const record = inState('running');
    const copy = structuredClone(record);
    lifecycle.succeed(record, outcome);
    lifecycle.progress(record, 1, 2);
    lifecycle.fail(record, error);
    expect(record).toEqual(copy);
  });
});
