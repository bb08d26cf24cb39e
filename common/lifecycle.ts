// The job's lifecycle: every change of a job record, as a pure function from the current
// record to the next one and the event that announces it. A transition that does not apply
// (the job already ended, or is not in the state it needs) returns undefined; the guard
// lives in one place (`from`). Callers apply these through RecordStore.apply, a
// compare-and-swap, and publish the event only when their write won.
import { ENDINGS, isEnding, TERMINAL, type EventType, type JobError, type JobEvent, type JobParams, type JobRecord, type JobStatus, type Verification } from './jobs.js';
import type { Priority } from './topics.js';

export interface Transition {
  record: JobRecord;
  /** What to announce on the events topic; absent for changes nobody follows live (a re-queue). */
  event?: JobEvent;
}

/** What a transition may read besides the record: the clock, for tests. */
export interface Clock {
  now?: Date;
}

const stamp = (clock: Clock) => (clock.now ?? new Date()).toISOString();

/** The event a record announces at `at`. */
export function eventOf(record: JobRecord, type: EventType, at: string, extra: Partial<JobEvent> = {}): JobEvent {
  return { v: 1, id: record.id, type, at, model_name: record.model_name, ...extra };
}

/** An ending written with its event in the outbox: published at least once, even after a crash. */
function ending(next: JobRecord, event: JobEvent): Transition {
  return { record: { ...next, outbox: [...next.outbox, event] }, event };
}

/** The one guard: a transition applies only to a record in one of these states. */
function from(record: JobRecord, states: readonly JobStatus[]): boolean {
  return states.includes(record.status);
}

const LIVE: readonly JobStatus[] = ['queued', 'running'];

export interface NewJob {
  id: string;
  model_name: string;
  priority: Priority;
  params: JobParams;
  width: number;
  height: number;
  input_key: string;
  idempotency: JobRecord['idempotency'];
  tenant?: string | null;
  webhook?: JobRecord['webhook'];
  deadlines?: JobRecord['deadlines'];
}

/** A new job, queued. */
export function queued(job: NewJob, clock: Clock = {}): Transition {
  const at = stamp(clock);
  const record: JobRecord = {
    v: 1,
    ...job,
    tenant: job.tenant ?? null,
    webhook: job.webhook ?? null,
    status: 'queued',
    output_key: null,
    created_at: at,
    updated_at: at,
    started_at: null,
    finished_at: null,
    attempts: 0,
    progress: null,
    timings: null,
    peak_memory_bytes: null,
    error: null,
    cancel_requested: false,
    outbox: [],
  };
  return { record, event: eventOf(record, 'queued', at) };
}

export interface StartOptions extends Clock {
  /**
   * The same attempt again: storage or Kafka failed under it, which is the infrastructure's
   * fault and does not count against the job's attempts.
   */
  resume?: boolean;
}

/** A consumer begins an attempt: queued -> running. */
export function start(record: JobRecord, options: StartOptions = {}): Transition | undefined {
  if (!from(record, LIVE)) return undefined;
  const at = stamp(options);
  const attempts = options.resume ? Math.max(1, record.attempts) : record.attempts + 1;
  const next: JobRecord = { ...record, status: 'running', attempts, started_at: record.started_at ?? at, progress: null, updated_at: at };
  return { record: next, event: eventOf(next, 'started', at, { attempt: next.attempts }) };
}

/** An attempt failed in a way worth retrying: running -> queued, keeping why. */
export function requeue(record: JobRecord, error: JobError, clock: Clock = {}): Transition | undefined {
  if (!from(record, LIVE)) return undefined;
  const at = stamp(clock);
  return { record: { ...record, status: 'queued', error, progress: null, updated_at: at } };
}

/** A denoising step finished. */
export function progress(record: JobRecord, step: number, total: number, clock: Clock = {}): Transition | undefined {
  if (!from(record, ['running'])) return undefined;
  const at = stamp(clock);
  const next: JobRecord = { ...record, progress: { step, total }, updated_at: at };
  return { record: next, event: eventOf(next, 'progress', at, { step, total }) };
}

export interface Outcome {
  output_key: string;
  peak_memory_bytes: number;
  compute_s: number;
  /** The run's denoising steps, when the runner reported any: the record's progress ends there. */
  total_steps?: number;
  /** Who computed the kept result (`local` or a remote worker's id), and how it was checked. */
  worker?: string | null;
  verification?: Verification | null;
  /** The runner's notes on the run. */
  notes?: string[];
}

/** Every step done: of the run's own count, else of the last progress recorded; none when neither is known. */
function progressDone(record: JobRecord, totalSteps: number | undefined): JobRecord['progress'] {
  const total = totalSteps ?? record.progress?.total;
  return total === undefined ? null : { step: total, total };
}

/** The output is stored: running -> succeeded. */
export function succeed(record: JobRecord, outcome: Outcome, clock: Clock = {}): Transition | undefined {
  // Also from queued: another member may have re-queued the job while this run finished it.
  if (!from(record, LIVE)) return undefined;
  const finished = clock.now ?? new Date();
  const at = finished.toISOString();
  const since = (time: string | null) => (time ? (finished.getTime() - Date.parse(time)) / 1000 : 0);
  const next: JobRecord = {
    ...record,
    status: 'succeeded',
    output_key: outcome.output_key,
    finished_at: at,
    updated_at: at,
    progress: progressDone(record, outcome.total_steps),
    error: null,
    peak_memory_bytes: outcome.peak_memory_bytes,
    worker: outcome.worker ?? null,
    verification: outcome.verification ?? null,
    ...(outcome.notes?.length ? { notes: outcome.notes } : {}),
    timings: {
      queue_s: record.started_at ? (Date.parse(record.started_at) - Date.parse(record.created_at)) / 1000 : 0,
      run_s: since(record.started_at),
      total_s: since(record.created_at),
      compute_s: outcome.compute_s,
    },
  };
  return ending(next, eventOf(next, 'succeeded', at));
}

/** The job ends canceled: queued (by the API) or running (by the consumer that stopped it). */
export function cancel(record: JobRecord, clock: Clock = {}): Transition | undefined {
  if (!from(record, LIVE)) return undefined;
  const at = stamp(clock);
  // The progress stays: it tells how far a running job got before it stopped. An earlier
  // attempt's error does not: it is not why the job ended.
  const next: JobRecord = { ...record, status: 'canceled', error: null, finished_at: at, updated_at: at };
  return ending(next, eventOf(next, 'canceled', at));
}

/** The time by which a job must start: the earlier of its two deadlines; undefined without either. */
export function startDeadline(record: JobRecord): number | undefined {
  const times = [record.deadlines?.start_by, record.deadlines?.cancel_at].filter((time): time is string => !!time).map(Date.parse);
  return times.length ? Math.min(...times) : undefined;
}

/** A job that never started and whose start deadline has passed: aborted, without reaching a runner. */
export function abortIfLate(record: JobRecord, clock: Clock = {}): Transition | undefined {
  const deadline = startDeadline(record);
  const now = clock.now ?? new Date();
  if (!from(record, ['queued']) || record.started_at !== null || deadline === undefined || now.getTime() < deadline) return undefined;
  const at = now.toISOString();
  const error: JobError = {
    code: 'deadline_exceeded',
    message: `not started by its deadline ${new Date(deadline).toISOString()}: aborted before it reached a runner (no GPU time spent)`,
  };
  const next: JobRecord = { ...record, status: 'aborted', error, finished_at: at, updated_at: at };
  return ending(next, eventOf(next, 'aborted', at, { error }));
}

/** A running job stopped at its cancel_at deadline: canceled, with the deadline as its reason. */
export function cancelAtDeadline(record: JobRecord, clock: Clock = {}): Transition | undefined {
  const canceled = cancel(record, clock);
  if (!canceled || !record.deadlines?.cancel_at) return canceled;
  const error: JobError = { code: 'deadline_exceeded', message: `still running at its deadline ${record.deadlines.cancel_at} (Cancel-After): canceled` };
  const next: JobRecord = { ...canceled.record, error, outbox: record.outbox };
  return ending(next, { ...canceled.event!, error });
}

/** A DELETE: a queued job is canceled at once, a running one asked to stop (requestCancel). */
export function cancelOrRequest(record: JobRecord, clock: Clock = {}): Transition | undefined {
  return record.status === 'queued' ? cancel(record, clock) : requestCancel(record, clock);
}

/** The job's check needs more distinct workers than are connected: its record says what it waits for. */
export function waitForWorkers(record: JobRecord, policy: string): Transition | undefined {
  if (!from(record, LIVE)) return undefined;
  const verification: Verification = { policy, state: 'waiting_for_workers', workers: [], outvoted: [] };
  return { record: { ...record, verification } };
}

/** A running job is asked to stop; its consumer then cancels it. Asked twice, nothing changes. */
export function requestCancel(record: JobRecord, clock: Clock = {}): Transition | undefined {
  if (!from(record, ['running']) || record.cancel_requested) return undefined;
  const at = stamp(clock);
  const next: JobRecord = { ...record, cancel_requested: true, updated_at: at };
  return { record: next, event: eventOf(next, 'cancel_requested', at) };
}

/** The job ends failed with its reason. */
export function fail(record: JobRecord, error: JobError, clock: Clock = {}): Transition | undefined {
  if (!from(record, LIVE)) return undefined;
  const at = stamp(clock);
  const next: JobRecord = { ...record, status: 'failed', error, finished_at: at, updated_at: at };
  return ending(next, eventOf(next, 'failed', at, { error }));
}

/** Past its retention: the input and output are deleted (by the caller), the record says so. Ended jobs only. */
export function expire(record: JobRecord, clock: Clock = {}): Transition | undefined {
  if (!from(record, ENDINGS)) return undefined;
  return { record: { ...record, status: 'expired', output_key: null, updated_at: stamp(clock) } };
}

/** Kafka acknowledged these events: they leave the outbox. Nothing to do: undefined. */
export function delivered(record: JobRecord, events: readonly JobEvent[]): Transition | undefined {
  const sent = (event: JobEvent) => events.some((e) => e.type === event.type && e.at === event.at);
  if (!record.outbox.some(sent)) return undefined;
  return { record: { ...record, outbox: record.outbox.filter((event) => !sent(event)) } };
}

/** The event that announced a job's ending, rebuilt from its record, for a stream that was not there. */
export function endingOf(record: JobRecord): JobEvent | undefined {
  if (!isEnding(record.status)) return undefined;
  const extra = record.status !== 'succeeded' && record.error ? { error: record.error } : {};
  return eventOf(record, record.status, record.finished_at ?? record.updated_at, extra);
}

export const isTerminal = (record: JobRecord) => TERMINAL.has(record.status);
