// The path of one job through a consumer: record (read, or handed over in the message) ->
// input -> runner -> start -> output -> final record -> event. It answers what the feed does
// with the message next. Every record change is a lifecycle transition (common/lifecycle.ts).
import type { ConsumerConfig } from '../common/config.js';
import { isEnding, type JobEvent, type JobMessage, type JobRecord } from '../common/jobs.js';
import * as lifecycle from '../common/lifecycle.js';
import { publishOutbox } from '../common/outbox.js';
import type { Logger } from '../common/logger.js';
import type { ModelEntry } from '../common/models.js';
import type { Publisher } from '../common/publisher.js';
import type { Applied, RecordStore } from '../common/records.js';
import { jobKeys, type ObjectStore } from '../common/storage.js';
import type { Priority } from '../common/topics.js';
import type { ConsumerMetrics } from './metrics.js';
import type { Throughput } from './throughput.js';
import type { RunnerPool } from './pool.js';
import type { RunnerOutcome } from './run.js';
import { describePolicy, type VerifiedOutcome, type Verifier } from './remote/verify.js';

/** A Kafka message as received, with what the feed knows about it. */
export interface Received {
  topic: string;
  partition: number;
  offset: string;
  priority: Priority;
  raw: Buffer | null;
  message: JobMessage | undefined;
  /** Why the message could not be parsed. */
  problem: string | undefined;
  /** Retries of infrastructure errors (storage, Kafka) that did not consume an attempt. */
  attempt: number;
  /** Other deliveries of the same job (redelivered meanwhile), finished together with it. */
  redeliveries?: Received[];
  /** The attempt this consumer had started when storage or Kafka interrupted it: resumed, not counted again. */
  resumeAttempt?: number;
  /** The runner died while holding this job and others: it runs alone from now on, so a crash tells whose it is. */
  suspect?: boolean;
  /** A cancel request for the job came before it ran: its record is read, not taken from the message. */
  cancelRequested?: boolean;
}

export type Verdict =
  | { kind: 'done'; status: string; record: JobRecord | undefined; deadLettered: boolean }
  | { kind: 'retry'; delayMs: number; resumeAttempt?: number; suspect?: boolean };

/** What a run needs: its model's clients and runners, and its DLQ topic. */
export interface JobDeps {
  publisher: Publisher;
  config: ConsumerConfig;
  store: ObjectStore;
  records: RecordStore;
  pool: RunnerPool;
  /** Runs a job on one worker or, per the model's policy, on several and checks they agree. */
  verifier: Verifier;
  model: ModelEntry;
  logger: Logger;
  metrics?: ConsumerMetrics;
  /** Measures the model's pace for queue-time estimates (consumer/throughput.ts). */
  throughput?: Throughput;
  dlq: string;
}

/** How long a message may wait for its record: the API writes it right after producing. */
const RECORD_WAIT_MS = 10_000;
/** Progress goes to the record a second into a job and every second after: a shorter job's record gets none. */
const PROGRESS_RECORD_INTERVAL_MS = 1000;
/** Progress events at most this often per job (and always the last step): cheap for Kafka, smooth for a UI. */
const PROGRESS_EVENT_INTERVAL_MS = 100;
/** Previews reach storage and the event stream at most this often per job: the others are dropped. */
const PREVIEW_INTERVAL_MS = 500;
/** A canceled job whose runner does not confirm within this long ends canceled anyway (its result, if any, is dropped). */
const CANCEL_GRACE_MS = 2000;

class Failure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const describeModelPolicy = (model: ModelEntry) => describePolicy(model.verify ?? { kind: 'off' });
const backoff = (attempt: number) => Math.min(30_000, 250 * 2 ** attempt);
/** A Kafka send that takes longer counts as Kafka being down: the job is retried later. */
const SEND_TIMEOUT_MS = 30_000;
const sendDeadline = () => AbortSignal.timeout(SEND_TIMEOUT_MS);
/** A job out of attempts, with the last reason it had (a consumer killed mid-job leaves none). */
function exhausted(record: JobRecord): Failure {
  const why = record.error?.message ?? 'each attempt was interrupted (its consumer or runner stopped) before it could record why';
  return new Failure('attempts_exhausted', `job failed ${record.attempts} times: ${why}`);
}

const done = (status: string, record: JobRecord | undefined, deadLettered = false): Verdict => ({ kind: 'done', status, record, deadLettered });

/**
 * The one info line of a job this run ended: which, how, after how many attempts, how long it
 * waited from acceptance to its start and ran from its start to its end (null: it never started).
 */
export function endedLine(verdict: Verdict): Record<string, unknown> | undefined {
  if (verdict.kind !== 'done' || !verdict.record || !isEnding(verdict.status)) return undefined;
  const { id, model_name, priority, status, attempts, created_at, started_at, finished_at, error } = verdict.record;
  const seconds = (from: string | null, to: string | null) => (from && to ? (Date.parse(to) - Date.parse(from)) / 1000 : null);
  return {
    job: id,
    model: model_name,
    priority,
    status,
    attempts,
    queue_s: seconds(created_at, started_at ?? finished_at),
    run_s: seconds(started_at, finished_at),
    ...(error ? { error: error.code } : {}),
  };
}

/** Writes an attempt's start once (see JobRun.startOnce); `written` is that write, if it began; `refused`, the record that refused it. */
type Start = (() => Promise<JobRecord | undefined>) & { written(): Promise<JobRecord | undefined> | undefined; refused: JobRecord | undefined };

export class JobRun {
  /** Later deliveries of the same job that finish with it. */
  readonly redeliveries: Received[];
  /** Whether this run started its job (its record says running): the pace counts it as running until it returns. */
  reachedStart = false;
  private canceled = false;
  /** Set when the job's cancel_at deadline stopped it (Cancel-After). */
  private deadlinePassed = false;
  private deadlineTimer: NodeJS.Timeout | undefined;
  /**
   * Settles CANCEL_GRACE_MS after cancel(): the runner stops a job at its next step, but one
   * stuck in a long step (or in the VAE) must not keep its user waiting.
   */
  private readonly cancelGrace: Promise<VerifiedOutcome>;
  private startCancelGrace!: () => void;
  /** The attempt this run started, while an infrastructure error would leave it unfinished. */
  private startedAttempt: number | undefined;
  /** The denoising steps the runner last reported for this run: the success write records them all done. */
  private totalSteps: number | undefined;
  /** The preview being stored and announced, if any; `stored`: one was, and the job's end deletes it. */
  private preview: { sending?: Promise<void>; at: number; stored: boolean } = { at: 0, stored: false };
  /** Whether the job's record came in its message (handedRecord), and may not be written yet. */
  private handed = false;
  /** Whether the job has a webhook, once its record is read: its events say so to the dispatcher. */
  private webhook: boolean | undefined;

  constructor(
    readonly received: Received,
    private readonly deps: JobDeps,
  ) {
    this.redeliveries = [...(received.redeliveries ?? [])];
    this.startedAttempt = received.resumeAttempt; // carried through retries that fail before the start
    const canceled: RunnerOutcome = { ok: false, code: 'canceled', retryable: false, message: 'canceled' };
    this.cancelGrace = new Promise((resolve) => {
      this.startCancelGrace = () => setTimeout(() => resolve(canceled), CANCEL_GRACE_MS).unref();
    });
  }

  cancel(): void {
    if (this.canceled) return;
    this.canceled = true;
    if (this.received.message) this.deps.pool.cancel(this.received.message.id);
    this.startCancelGrace();
  }

  async execute(): Promise<Verdict> {
    const { message } = this.received;
    try {
      if (!message) throw new Failure('poison', `unreadable message: ${this.received.problem}`);
      if (message.model_name !== this.deps.model.name) {
        throw new Failure('unknown_model', `message for model "${message.model_name}" on ${this.received.topic}`);
      }
      return await this.run(message).finally(() => this.dropPreview(message.id));
    } catch (error) {
      clearTimeout(this.deadlineTimer);
      if (!(error instanceof Failure)) return this.retryLater(error);
      if (error.code === 'no_record') return this.abandoned(error);
      return this.fail(error).catch((failed: unknown) => this.retryLater(failed));
    }
  }

  /** Storage or Kafka trouble: try again later without spending one of the job's attempts. */
  private retryLater(error: unknown): Verdict {
    this.deps.logger.warn({ err: error, job: this.received.message?.id }, 'job interrupted by an infrastructure error; retrying');
    return { kind: 'retry', delayMs: backoff(this.received.attempt), resumeAttempt: this.startedAttempt };
  }

  private async run(message: JobMessage): Promise<Verdict> {
    const { store } = this.deps;
    // The input's key follows from the id, so it is fetched while the record is read.
    const inputRead = store.getBytes(jobKeys(message.id).input);
    inputRead.catch(() => {}); // observed below, unless the record already ends the run
    const handed = this.handedRecord(message);
    const record = handed ?? (await this.waitForRecord(message.id));
    this.webhook = record.webhook !== null;
    const resumes = (r: JobRecord) => r.status === 'running' && r.attempts === this.received.resumeAttempt;
    const stopped = await this.stopBeforeStart(record, resumes);
    if (stopped) return stopped;

    let input = await inputRead;
    if (!input) {
      // The API stores the input beside producing the message and writes the record after both:
      // read before the record was there, it may not have been stored yet.
      if (this.handed) await this.waitForRecord(message.id);
      input = await store.getBytes(jobKeys(message.id).input);
    }
    if (!input) throw new Failure('missing_input', `input object ${jobKeys(message.id).input} does not exist`);

    // The job stays queued until its runner starts it (a batch may be computing ahead of it).
    const start = this.startOnce(record, resumes);
    // A suspect of an earlier crash runs alone, so that if it crashes again it is known to be the cause.
    const request = {
      id: message.id,
      params: record.params,
      image: input,
      priority: message.priority,
      pixels: record.width * record.height,
      solo: this.received.suspect,
      callbacks: this.progressReporter(record, start),
    };
    const ran = this.deps.verifier.run(request, { onWait: () => void this.markWaiting(message.id) });
    this.stopAtDeadline(record);
    const outcome = await Promise.race([ran, this.cancelGrace]);
    clearTimeout(this.deadlineTimer);
    // A start the record refused ends as the record says; else a canceled run ends canceled.
    const unstarted = async () => (start.refused && (await this.stopBeforeStart(start.refused, resumes))) || this.finishCanceled(message.id);
    if (!outcome.ok && outcome.code === 'canceled') {
      // A started event goes out before the ending.
      await start.written()?.catch((error: unknown) => {
        if (error instanceof Failure) throw error; // no record: never accepted
      });
      return unstarted();
    }
    // A failure before the start still spends an attempt: a job that kills its runner unstarted must not loop.
    const running = await start();
    if (!running) return unstarted();
    return this.settle(message, running, outcome);
  }

  /**
   * The record a first delivery carries as the intake wrote it, with its place in Kafka (which
   * is this message's), known to the record store without a read: the start's write is
   * conditional on it, so a record changed since or not there yet is read then. Undefined for a
   * retry, which reads what the attempts before it recorded, and for a job whose cancel request
   * came first (a queued job's cancel changes only its record).
   */
  private handedRecord(message: JobMessage): JobRecord | undefined {
    const { received } = this;
    const retried = received.attempt > 0 || received.resumeAttempt !== undefined || received.suspect;
    if (!message.record || message.record.id !== message.id || retried || received.cancelRequested) return undefined;
    const record: JobRecord = { ...message.record, queue: { topic: received.topic, partition: received.partition, offset: received.offset } };
    this.handed = this.deps.records.handOver(record);
    return this.handed ? record : undefined;
  }

  /** A verdict when the record says the job must not start: it ended, was canceled, is past its start deadline or out of attempts. */
  private async stopBeforeStart(record: JobRecord, resumes: (r: JobRecord) => boolean): Promise<Verdict | undefined> {
    if (lifecycle.isTerminal(record)) {
      await this.flush(record); // an ending announced by a run that stopped before Kafka had it
      return done(`skipped_${record.status}`, record);
    }
    if (record.cancel_requested || this.canceled) return this.finishCanceled(record.id);
    // Checked before the job reaches a runner: one past its start deadline never does.
    if (lifecycle.abortIfLate(record)) return this.finishAborted(record.id);
    if (record.attempts >= this.deps.config.MAX_ATTEMPTS && !resumes(record)) throw exhausted(record);
    return undefined;
  }

  /**
   * The start of the attempt, written once: when the runner starts the job (its `started`
   * frame), or when the job's outcome comes first. Resolves with the running record, or
   * undefined when the record refused it (it ended, or was canceled or spent its attempts
   * meanwhile; `refused` is then what it says) and the runner is told to drop the job. A record
   * not written yet is waited for; one that never comes rejects with no_record.
   */
  private startOnce(record: JobRecord, resumes: (r: JobRecord) => boolean): Start {
    let written: Promise<JobRecord | undefined> | undefined;
    const { config, pool } = this.deps;
    const admits = (r: JobRecord) => !r.cancel_requested && (r.attempts < config.MAX_ATTEMPTS || resumes(r));
    const transition = (r: JobRecord) => (admits(r) ? lifecycle.start(r, { resume: resumes(r) }) : undefined);
    const write = async () => {
      const started = await this.applyToRecord(record.id, transition).catch((error: unknown) => {
        if (error instanceof Failure) pool.cancel(record.id); // no record: never accepted
        throw error;
      });
      if (!started.event || !started.record) {
        once.refused = started.record;
        pool.cancel(record.id);
        return undefined;
      }
      this.startedAttempt = started.record.attempts;
      if (!this.reachedStart) {
        this.reachedStart = true;
        this.deps.throughput?.started();
      }
      await this.publish(started.event); // before any progress event: the job's events stay in order
      return started.record;
    };
    const start = () => {
      if (!written) {
        written = write();
        written.catch(() => {}); // seen by the run's own await; a storage error there retries the job
      }
      return written;
    };
    const once: Start = Object.assign(start, { written: () => written, refused: undefined });
    return once;
  }

  /** The job's check needs more distinct workers than are connected: its record says so while it waits. */
  private async markWaiting(id: string): Promise<void> {
    await this.deps.records
      .apply(id, (r) => lifecycle.waitForWorkers(r, describeModelPolicy(this.deps.model)))
      .catch((error: unknown) => this.deps.logger.warn({ err: error, job: id }, 'waiting state not recorded'));
  }

  private async settle(message: JobMessage, running: JobRecord, outcome: VerifiedOutcome): Promise<Verdict> {
    if (outcome.ok) return this.succeed(message, outcome);
    if (outcome.code === 'canceled') return this.finishCanceled(message.id);
    if (outcome.code === 'runner_crashed' && outcome.shared) {
      // The runner died holding other jobs too: not proof against this one. Run it again, alone,
      // as the same attempt (the culprit then crashes alone, and only its attempts are spent).
      this.deps.logger.warn({ job: message.id }, 'runner crashed holding several jobs; running this one alone');
      return { kind: 'retry', delayMs: 0, resumeAttempt: this.startedAttempt, suspect: true };
    }
    this.startedAttempt = undefined; // the runner failed it: that attempt counts
    if (outcome.retryable && running.attempts < this.deps.config.MAX_ATTEMPTS) {
      const error = { code: outcome.code, message: outcome.message };
      await this.deps.records.apply(message.id, (r) => lifecycle.requeue(r, error));
      this.deps.logger.warn({ job: message.id, code: outcome.code, attempt: running.attempts }, 'job attempt failed; retrying');
      return { kind: 'retry', delayMs: backoff(running.attempts - 1) };
    }
    throw new Failure(outcome.code, outcome.message);
  }

  private async succeed(message: JobMessage, outcome: Extract<VerifiedOutcome, { ok: true }>): Promise<Verdict> {
    const { result } = outcome;
    this.deps.metrics?.ranBatch?.(this.deps.model.name, result.batch_size, result.peak_memory_bytes, result.timings.compute_s);
    const output_key = jobKeys(message.id).output;
    // The output key comes from the job id: a redelivered job overwrites the same object.
    await this.deps.store.put(output_key, outcome.image, 'image/png');
    const applied = await this.deps.records.apply(message.id, (r) =>
      lifecycle.succeed(r, {
        output_key,
        peak_memory_bytes: result.peak_memory_bytes,
        compute_s: result.timings.compute_s,
        total_steps: this.totalSteps,
        worker: outcome.worker,
        verification: outcome.verification,
        notes: result.notes,
      }),
    );
    await this.flush(applied.record);
    return done(applied.record?.status ?? 'succeeded', applied.record);
  }

  /** At the job's cancel_at (Cancel-After) the run is canceled, as a DELETE would. */
  private stopAtDeadline(record: JobRecord): void {
    const cancelAt = record.deadlines?.cancel_at;
    if (!cancelAt) return;
    this.deadlineTimer = setTimeout(() => {
      this.deadlinePassed = true;
      this.cancel();
    }, Math.max(0, Date.parse(cancelAt) - Date.now()));
    this.deadlineTimer.unref();
  }

  /**
   * A transition of the job's record. A record handed over in the job's message may not be
   * written yet (the API writes it right after producing): it is waited for, and one that never
   * comes rejects with no_record.
   */
  private async applyToRecord(id: string, transition: (record: JobRecord) => lifecycle.Transition | undefined): Promise<Applied> {
    const applied = await this.deps.records.apply(id, transition);
    if (applied.record || !this.handed) return applied;
    await this.waitForRecord(id, { readJustMissed: true });
    return this.deps.records.apply(id, transition);
  }

  private async finishAborted(id: string): Promise<Verdict> {
    const applied = await this.applyToRecord(id, (r) => lifecycle.abortIfLate(r));
    await this.flush(applied.record);
    return done(applied.record?.status ?? 'aborted', applied.record);
  }

  private async finishCanceled(id: string): Promise<Verdict> {
    // Stopped by its deadline: aborted if it never started, else canceled with the deadline as the reason.
    const stop = this.deadlinePassed ? (r: JobRecord) => lifecycle.abortIfLate(r) ?? lifecycle.cancelAtDeadline(r) : (r: JobRecord) => lifecycle.cancel(r);
    const applied = await this.applyToRecord(id, stop);
    await this.flush(applied.record);
    return done(applied.record?.status ?? 'canceled', applied.record);
  }

  /**
   * A message whose record was never written: its intake stopped half-way (the API died), and
   * its client got no 202. No job was accepted, so none failed: it is skipped, not dead-lettered
   * (its input is the sweeper's).
   */
  private abandoned(failure: Failure): Verdict {
    this.deps.logger.warn({ job: this.received.message?.id }, failure.message);
    return done('abandoned', undefined);
  }

  /** Dead-letters the message and fails the job with its reason, once. */
  private async fail(failure: Failure): Promise<Verdict> {
    const { message } = this.received;
    const error = { code: failure.code, message: failure.message };
    const deadLetter = {
      v: 1,
      error,
      failed_at: new Date().toISOString(),
      source: { topic: this.received.topic, partition: this.received.partition, offset: this.received.offset },
      message: this.received.raw?.toString('utf8') ?? null,
    };
    await this.deps.publisher.send(this.deps.dlq, { key: message?.id ?? null, value: JSON.stringify(deadLetter) }, sendDeadline());
    let record: JobRecord | undefined;
    if (message) {
      record = (await this.deps.records.apply(message.id, (r) => lifecycle.fail(r, error))).record;
      await this.flush(record);
    }
    this.deps.logger.error({ job: message?.id, ...error }, 'job failed and was dead-lettered');
    return done('failed', record, true);
  }

  /** `readJustMissed`: a read found no record a moment ago, so the first read waits too. */
  private async waitForRecord(id: string, { readJustMissed = false } = {}): Promise<JobRecord> {
    const deadline = Date.now() + RECORD_WAIT_MS;
    if (readJustMissed) await new Promise((resolve) => setTimeout(resolve, 2));
    // The API writes the record a few milliseconds after the message: retry soon, then back off.
    for (let delay = 2; ; delay = Math.min(Math.ceil(delay * 1.5), 1000)) {
      const record = await this.deps.records.get(id);
      if (record) return record;
      if (Date.now() > deadline) throw new Failure('no_record', `job ${id} has no record: it was never accepted`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  /**
   * Progress goes to the events topic every 100 ms (and at the last step) and to the record every
   * second, counted from the start. The record's start and success writes carry progress already
   * (none, then all steps), so a job of a second or less writes no progress to it: at 40 jobs a
   * second a write at the first and the last step were two of a job's eight storage requests.
   */
  private progressReporter(record: JobRecord, start: Start) {
    let lastRecordWrite: number | undefined;
    let lastEvent = 0;
    return {
      onStarted: () => {
        lastRecordWrite = Date.now(); // counted from the start
        void start();
      },
      onProgress: (step: number, total: number) => {
        this.totalSteps = total;
        const now = Date.now();
        lastRecordWrite ??= now;
        const started = start(); // written already, or now: progress comes after the start
        if (now - lastEvent >= PROGRESS_EVENT_INTERVAL_MS || step >= total) {
          lastEvent = now;
          void started
            .then((running) => {
              const event = running && lifecycle.progress(running, step, total)?.event;
              if (event) return this.publish(event);
            })
            .catch(() => {}); // the start's failure is the run's to handle
        }
        if (now - lastRecordWrite < PROGRESS_RECORD_INTERVAL_MS || step >= total) return;
        lastRecordWrite = now;
        void started
          .then(() => this.deps.records.apply(record.id, (r) => lifecycle.progress(r, step, total)))
          .catch((error: unknown) => this.deps.logger.warn({ err: error, job: record.id }, 'progress not recorded'));
      },
      onPreview: (step: number, total: number, image: Buffer) => this.sendPreview(record, start, step, total, image),
    };
  }

  /**
   * Stores the preview (one object a job, overwritten) and then announces it, at most every
   * PREVIEW_INTERVAL_MS and one at a time: a slow store drops previews, never delays the job.
   */
  private sendPreview(record: JobRecord, start: Start, step: number, total: number, image: Buffer): void {
    const now = Date.now();
    if (this.preview.sending || now - this.preview.at < PREVIEW_INTERVAL_MS) return;
    this.preview.at = now;
    this.preview.sending = (async () => {
      const running = await start();
      if (!running) return;
      await this.deps.store.put(jobKeys(record.id).preview, image, 'image/webp');
      this.preview.stored = true;
      await this.publish(lifecycle.eventOf(running, 'preview', new Date().toISOString(), { step, total }));
    })()
      .catch((error: unknown) => this.deps.logger.debug({ err: error, job: record.id }, 'preview not sent'))
      .finally(() => (this.preview.sending = undefined));
  }

  /** A job's preview lives while it runs: deleted once its run is over, whatever the outcome. */
  private async dropPreview(id: string): Promise<void> {
    await this.preview.sending;
    if (!this.preview.stored) return;
    await this.deps.store.delete(jobKeys(id).preview).catch((error: unknown) => this.deps.logger.warn({ err: error, job: id }, 'preview not deleted'));
  }

  /**
   * Publishes the events of the record's outbox, then empties it. A Kafka failure throws, so the
   * received is retried (its offset stays uncommitted) until they are out: at least once.
   */
  private flush(record: JobRecord | undefined): Promise<void> {
    return publishOutbox(this.deps, record, sendDeadline());
  }

  private async publish(event: JobEvent): Promise<void> {
    try {
      await this.deps.publisher.publishEvent(event, sendDeadline(), this.webhook);
    } catch (error) {
      // Events feed live views; the record stays the truth, so a lost event is logged, not fatal.
      this.deps.logger.warn({ err: error, job: event.id, event: event.type }, 'event not published');
    }
  }
}
