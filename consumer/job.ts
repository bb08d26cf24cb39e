// The path of one job through a consumer: record -> input -> runner -> output ->
// final record -> event. It answers what the worker does with the message next.
import { TERMINAL, type JobEvent, type JobMessage, type JobRecord } from '../common/jobs.js';
import { jobKeys } from '../common/storage.js';
import type { Priority } from '../common/topics.js';
import type { RunnerOutcome } from './runner.js';
import type { WorkerDeps } from './worker.js';

/** A message as received, with what the worker knows about it. */
export interface Delivery {
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
  duplicates?: Delivery[];
}

export type Verdict =
  | { kind: 'done'; status: string; record: JobRecord | undefined; deadLettered: boolean }
  | { kind: 'retry'; delayMs: number };

/** What a run needs: the worker's parts, less the Kafka client, plus its model's DLQ topic. */
export type JobDeps = Omit<WorkerDeps, 'kafka'> & { dlq: string };

/** How long a message may wait for its record: the API writes it right after producing. */
const RECORD_WAIT_MS = 10_000;
const PROGRESS_RECORD_INTERVAL_MS = 1000;
/** Progress events at most this often per job (and always the last step): cheap for Kafka, smooth for a UI. */
const PROGRESS_EVENT_INTERVAL_MS = 100;

class Failure extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const backoff = (attempt: number) => Math.min(30_000, 250 * 2 ** attempt);
/** A Kafka send that takes longer counts as Kafka being down: the job is retried later. */
const SEND_TIMEOUT_MS = 30_000;
const sendDeadline = () => AbortSignal.timeout(SEND_TIMEOUT_MS);

export class JobRun {
  /** Later deliveries of the same job that finish with it. */
  readonly aliases: Delivery[];
  private canceled = false;

  constructor(
    readonly delivery: Delivery,
    private readonly deps: JobDeps,
  ) {
    this.aliases = [...(delivery.duplicates ?? [])];
  }

  cancel(): void {
    this.canceled = true;
    if (this.delivery.message) this.deps.runner.cancel(this.delivery.message.id);
  }

  async execute(): Promise<Verdict> {
    const { message } = this.delivery;
    try {
      if (!message) throw new Failure('poison', `unreadable message: ${this.delivery.problem}`);
      if (message.model_name !== this.deps.model.name) {
        throw new Failure('unknown_model', `message for model "${message.model_name}" on ${this.delivery.topic}`);
      }
      return await this.run(message);
    } catch (error) {
      if (error instanceof Failure) return this.fail(error);
      // Storage or Kafka trouble: try again later without spending one of the job's attempts.
      this.deps.logger.warn({ err: error, job: message?.id }, 'job interrupted by an infrastructure error; retrying');
      return { kind: 'retry', delayMs: backoff(this.delivery.attempt) };
    }
  }

  private async run(message: JobMessage): Promise<Verdict> {
    const { records, store, runner, config } = this.deps;
    // The input's key follows from the id, so it is fetched while the record is read.
    const inputRead = store.getBytes(jobKeys(message.id).input);
    inputRead.catch(() => {}); // observed below, unless the record already ends the run
    const record = await this.waitForRecord(message.id);
    if (TERMINAL.has(record.status)) return { kind: 'done', status: `skipped_${record.status}`, record, deadLettered: false };
    if (record.cancel_requested || this.canceled) return this.finishCanceled(message.id);

    const input = await inputRead;
    if (!input) throw new Failure('missing_input', `input object ${jobKeys(message.id).input} does not exist`);
    if (record.attempts >= config.MAX_ATTEMPTS) {
      throw new Failure('attempts_exhausted', `job failed ${record.attempts} times: ${record.error?.message ?? 'no reason recorded'}`);
    }
    const running = await records.update(message.id, (r) => {
      if (TERMINAL.has(r.status)) return undefined;
      const now = new Date().toISOString();
      return { ...r, status: 'running', attempts: r.attempts + 1, started_at: r.started_at ?? now, progress: null };
    });
    if (!running || running.status !== 'running') return { kind: 'done', status: 'skipped', record: running, deadLettered: false };
    // The event is not awaited: the runner must not wait for Kafka.
    const started = this.publish({ type: 'started', attempt: running.attempts });
    if (this.canceled) runner.cancel(message.id);

    const outcome = await runner.run(message.id, running.params, input, this.progressReporter(message.id));
    await started; // keeps the job's events in order: started before its outcome
    return this.settle(message, running, outcome);
  }

  private async settle(message: JobMessage, running: JobRecord, outcome: RunnerOutcome): Promise<Verdict> {
    if (outcome.ok) return this.succeed(message, outcome);
    if (outcome.code === 'canceled') return this.finishCanceled(message.id);
    if (outcome.retryable && running.attempts < this.deps.config.MAX_ATTEMPTS) {
      await this.deps.records.update(message.id, (r) =>
        TERMINAL.has(r.status) ? undefined : { ...r, status: 'queued', error: { code: outcome.code, message: outcome.message } },
      );
      this.deps.logger.warn({ job: message.id, code: outcome.code, attempt: running.attempts }, 'job attempt failed; retrying');
      return { kind: 'retry', delayMs: backoff(running.attempts - 1) };
    }
    throw new Failure(outcome.code, outcome.message);
  }

  private async succeed(message: JobMessage, outcome: Extract<RunnerOutcome, { ok: true }>): Promise<Verdict> {
    const { header } = outcome;
    this.deps.metrics?.ranBatch?.(this.deps.model.name, header.batch_size, header.peak_memory_bytes, header.timings.compute_s);
    const outputKey = jobKeys(message.id).output;
    // The output key comes from the job id: a redelivered job overwrites the same object.
    await this.deps.store.put(outputKey, outcome.image, 'image/png');
    const record = await this.deps.records.update(message.id, (r) => {
      if (TERMINAL.has(r.status)) return undefined;
      const finished = new Date();
      const seconds = (from: string | null) => (from ? (finished.getTime() - Date.parse(from)) / 1000 : 0);
      return {
        ...r,
        status: 'succeeded',
        output_key: outputKey,
        finished_at: finished.toISOString(),
        progress: r.progress ? { step: r.progress.total, total: r.progress.total } : null,
        error: null,
        peak_memory_bytes: outcome.header.peak_memory_bytes,
        timings: {
          queue_s: r.started_at ? (Date.parse(r.started_at) - Date.parse(r.created_at)) / 1000 : 0,
          run_s: seconds(r.started_at),
          total_s: seconds(r.created_at),
          compute_s: outcome.header.timings.compute_s,
        },
      };
    });
    if (record?.status === 'succeeded') await this.publish({ type: 'succeeded' });
    return { kind: 'done', status: record?.status ?? 'succeeded', record, deadLettered: false };
  }

  private async finishCanceled(id: string): Promise<Verdict> {
    const record = await this.deps.records.update(id, (r) =>
      TERMINAL.has(r.status) ? undefined : { ...r, status: 'canceled', finished_at: new Date().toISOString() },
    );
    if (record?.status === 'canceled') await this.publish({ type: 'canceled' });
    return { kind: 'done', status: 'canceled', record, deadLettered: false };
  }

  /** Dead-letters the message and fails the job with its reason, once. */
  private async fail(failure: Failure): Promise<Verdict> {
    const { message } = this.delivery;
    const error = { code: failure.code, message: failure.message };
    const deadLetter = {
      v: 1,
      error,
      failed_at: new Date().toISOString(),
      source: { topic: this.delivery.topic, partition: this.delivery.partition, offset: this.delivery.offset },
      message: this.delivery.raw?.toString('utf8') ?? null,
    };
    await this.deps.publisher.send(this.deps.dlq, { key: message?.id ?? null, value: JSON.stringify(deadLetter) }, sendDeadline());
    let record: JobRecord | undefined;
    if (message) {
      record = await this.deps.records.update(message.id, (r) =>
        TERMINAL.has(r.status) ? undefined : { ...r, status: 'failed', error, finished_at: new Date().toISOString() },
      );
      if (record?.status === 'failed') await this.publish({ type: 'failed', error });
    }
    this.deps.logger.error({ job: message?.id, ...error }, 'job failed and was dead-lettered');
    return { kind: 'done', status: 'failed', record, deadLettered: true };
  }

  private async waitForRecord(id: string): Promise<JobRecord> {
    const deadline = Date.now() + RECORD_WAIT_MS;
    // The API writes the record a few milliseconds after the message: retry soon, then back off.
    for (let delay = 5; ; delay = Math.min(delay * 2, 1000)) {
      const record = await this.deps.records.get(id);
      if (record) return record;
      if (Date.now() > deadline) throw new Failure('no_record', `job ${id} has no record: it was never accepted`);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  /** Progress goes to the events topic every 100 ms and to the record every second (and at the last step). */
  private progressReporter(id: string) {
    let lastRecordWrite = 0;
    let lastEvent = 0;
    return {
      onProgress: (step: number, total: number) => {
        const now = Date.now();
        if (now - lastEvent >= PROGRESS_EVENT_INTERVAL_MS || step >= total) {
          lastEvent = now;
          void this.publish({ type: 'progress', step, total });
        }
        if (now - lastRecordWrite < PROGRESS_RECORD_INTERVAL_MS && step < total) return;
        lastRecordWrite = now;
        void this.deps.records
          .update(id, (r) => (r.status === 'running' ? { ...r, progress: { step, total } } : undefined))
          .catch((error: unknown) => this.deps.logger.warn({ err: error, job: id }, 'progress not recorded'));
      },
    };
  }

  private async publish(event: Omit<JobEvent, 'v' | 'at' | 'id' | 'model_name'>): Promise<void> {
    const id = this.delivery.message!.id;
    try {
      const full: JobEvent = { v: 1, id, at: new Date().toISOString(), model_name: this.deps.model.name, ...event };
      await this.deps.publisher.publishEvent(full, sendDeadline());
    } catch (error) {
      // Events feed live views; the record stays the truth, so a lost event is logged, not fatal.
      this.deps.logger.warn({ err: error, job: id, event: event.type }, 'event not published');
    }
  }
}
