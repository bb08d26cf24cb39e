// One batch: list the folder, submit every image (bounded concurrency), print its access link,
// and with --wait follow every job to its end and save the results.
import { access, readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { Presets, SingleBar } from 'cli-progress';
import pLimit, { type LimitFunction } from 'p-limit';
import { TERMINAL } from '../../common/jobs.js';
import { downloadResult, formFields, getJob, idempotencyKey, modelProblem, retryKey, sha256, submitImage, type Client, type JobAccepted } from './client.js';
import { IMAGE_EXTENSIONS, isImage, listFiles, markResults, outputPaths, type InputFile } from './files.js';
import { UsageError, type BatchOptions } from './options.js';
import { DEFAULT_RETRY, describeError, type RetryNotice, type RetryPolicy } from './retry.js';

export interface Io {
  fetch: typeof fetch;
  /** The access links and the summary. */
  stdout: NodeJS.WritableStream;
  /** Warnings, refusals, retries and the progress bar. */
  stderr: NodeJS.WritableStream;
  retry?: RetryPolicy;
  pollMs?: number;
  /**
   * Aborted on Ctrl-C: nothing more is sent, the requests in flight are dropped, the progress bar
   * gives the terminal back, and the summary says what remains for the next run.
   */
  signal?: AbortSignal;
}

export interface Summary {
  /** Accepted by the API as new (or still pending) jobs. */
  submitted: number;
  /** Jobs of this run that finished well (and were saved, with --out); counted with --wait only. */
  succeeded: number;
  /** Jobs that failed or were canceled, and results that could not be saved. */
  failed: number;
  /** Files the API refused (4xx) or that could not be sent at all. */
  refused: number;
  /** Files that are not images. */
  skipped: number;
  /** Files whose result already exists under --out, or whose job had already succeeded. */
  alreadyDone: number;
  /** Images not yet sent, or (with --wait) whose job had not finished, when the batch stopped. */
  remaining: number;
  /** Stopped by io.signal before the end. */
  interrupted: boolean;
}

/** The batch cannot start: the API does not answer or does not serve the model. Nothing was sent. */
export class StartError extends Error {
  override name = 'StartError';
}

interface Batch {
  options: BatchOptions;
  io: Io;
  limit: LimitFunction;
  summary: Summary;
  /** Each image's result under --out, chosen over the whole batch so that no two share one. */
  outputs: Map<string, string>;
  /** Images whose result already exists under --out: not sent, and the API not asked. */
  saved: ReadonlySet<string>;
  /** Images not settled yet (sent and, with --wait, finished; or refused or given up): `remaining` if the batch stops. */
  open: Set<string>;
}

/** A job to follow with --wait; `counted` is false for one that had succeeded before this run. */
interface Followed {
  file: InputFile;
  job: JobAccepted;
  counted: boolean;
}

/** How many times a file whose earlier job failed is submitted afresh within one run. */
const MAX_FRESH_TRIES = 3;
const DEFAULT_POLL_MS = 1000;
/** The check of the API before the first upload: a few quick tries, so a wrong --api is told at once. */
const CHECK_RETRY: RetryPolicy = { tries: 3, minDelayMs: 500, maxDelayMs: 1000, maxRetryAfterMs: 5000 };

const say = (batch: Batch, line: string) => batch.io.stdout.write(`${line}\n`);
const warn = (batch: Batch, line: string) => batch.io.stderr.write(`${line}\n`);
const exists = (path: string) => access(path).then(() => true, () => false);
const stopped = (batch: Batch) => batch.io.signal?.aborted ?? false;
const settle = (batch: Batch, file: InputFile) => batch.open.delete(file.name);
/** An image's line on stdout: `<relative path> TAB <link to its result> TAB <state>`. */
const line = (batch: Batch, file: InputFile, link: string, state: 'submitted' | 'already done') => say(batch, `${file.name}\t${link}\t${state}`);

function client(batch: Batch, file: InputFile): Client {
  const retry = batch.io.retry ?? DEFAULT_RETRY;
  return {
    fetch: batch.io.fetch,
    api: batch.options.api,
    apiKey: batch.options.apiKey,
    retry,
    signal: batch.io.signal,
    notice: (error, attempt, waitMs) =>
      warn(batch, `${file.name}: ${describeError(error)}; try ${attempt + 1} of ${retry.tries}${waitMs ? ` after ${(waitMs / 1000).toFixed(1)} s` : ''}`),
  };
}

/** Before the first upload: the API answers and serves the model, or the batch stops with what is wrong. */
async function checkApi(batch: Batch): Promise<void> {
  const { options, io } = batch;
  const retry = io.retry ?? CHECK_RETRY;
  const notice: RetryNotice = (error, attempt) => warn(batch, `GET /api/models: ${describeError(error)}; try ${attempt + 1} of ${retry.tries}`);
  const api: Client = { fetch: io.fetch, api: options.api, apiKey: options.apiKey, retry, notice, signal: io.signal };
  const problem = await modelProblem(api, options.request.model);
  if (problem) throw new StartError(`${problem}; nothing was sent`);
}

/** The endings without a result: a re-run sends such a file again. */
const NO_RESULT: ReadonlySet<string> = new Set(['failed', 'canceled', 'aborted']);

/**
 * Sends one file. Its Idempotency-Key makes the API answer with the job an earlier run made;
 * when that job failed or was canceled, the file is sent again under a key derived from it.
 */
async function sendFile(batch: Batch, file: InputFile): Promise<JobAccepted> {
  const bytes = await readFile(file.path);
  const fields = formFields(batch.options.request);
  let key = idempotencyKey(sha256(bytes), fields);
  for (let fresh = 0; ; fresh++) {
    const job = await submitImage(client(batch, file), { bytes, filename: file.name }, fields, key);
    if (!NO_RESULT.has(job.status) || fresh === MAX_FRESH_TRIES) return job;
    key = retryKey(key, job.id);
  }
}

/** Submits one image and prints its line; returns the job to follow with --wait. */
async function submitFile(batch: Batch, file: InputFile): Promise<Followed | undefined> {
  const { options, summary } = batch;
  const output = batch.outputs.get(file.name);
  if (output && batch.saved.has(file.name)) {
    summary.alreadyDone++;
    settle(batch, file);
    line(batch, file, pathToFileURL(output).href, 'already done');
    return undefined;
  }
  let job: JobAccepted;
  try {
    job = await batch.limit(() => {
      batch.io.signal?.throwIfAborted(); // queued behind others when Ctrl-C came: left for the next run
      return sendFile(batch, file);
    });
  } catch (error) {
    if (stopped(batch)) return undefined;
    summary.refused++;
    settle(batch, file);
    warn(batch, `${file.name}: not submitted: ${describeError(error)}`);
    return undefined;
  }
  if (job.status === 'succeeded') {
    summary.alreadyDone++;
    line(batch, file, job.result_url, 'already done');
    if (output) return { file, job, counted: false };
    settle(batch, file);
    return undefined;
  }
  if (NO_RESULT.has(job.status)) {
    summary.failed++;
    settle(batch, file);
    warn(batch, `${file.name}: ${MAX_FRESH_TRIES + 1} jobs in a row failed, were canceled or aborted (the last: ${job.id}); not submitted again`);
    return undefined;
  }
  summary.submitted++;
  line(batch, file, job.result_url, 'submitted');
  if (options.wait) return { file, job, counted: true };
  settle(batch, file);
  return undefined;
}

/** Polls the job until it is finished; returns why it failed, or undefined when it succeeded and is saved. */
async function finish(batch: Batch, { file, job }: Followed): Promise<string | undefined> {
  const api = client(batch, file);
  let state = await batch.limit(() => getJob(api, job.status_url));
  while (!TERMINAL.has(state.status)) {
    await sleep(batch.io.pollMs ?? DEFAULT_POLL_MS, undefined, { signal: batch.io.signal });
    state = await batch.limit(() => getJob(api, job.status_url));
  }
  if (state.status !== 'succeeded') return `job ${job.id} ${state.status}${state.error ? `: ${state.error.message}` : ''}`;
  const output = batch.outputs.get(file.name);
  if (output) await batch.limit(() => downloadResult(api, state.result_url, output));
  return undefined;
}

/** --wait: every job to its end, with a progress bar on stderr (drawn only on a terminal). */
async function followJobs(batch: Batch, jobs: Followed[]): Promise<void> {
  const bar = new SingleBar(
    { stream: batch.io.stderr, format: 'waiting {bar} {value}/{total} finished, {failed} failed', hideCursor: true },
    Presets.shades_classic,
  );
  const failures: string[] = [];
  bar.start(jobs.length, 0, { failed: 0 });
  try {
    await Promise.all(
      jobs.map(async (followed) => {
        const failure = await finish(batch, followed).catch((error: unknown) => (stopped(batch) ? null : describeError(error)));
        if (failure === null) return; // stopped: the job is left to the next run
        if (failure) failures.push(`${followed.file.name}: ${failure}`);
        if (failure) batch.summary.failed++;
        else if (followed.counted) batch.summary.succeeded++;
        settle(batch, followed.file);
        bar.increment(1, { failed: failures.length });
      }),
    );
  } finally {
    bar.stop(); // shows the cursor and turns line wrap back on, also when the batch is stopped or fails
  }
  for (const failure of failures.sort()) warn(batch, failure);
}

/** The summary: the counts, then where the results are. */
export function formatSummary(s: Summary, out: string | undefined): string {
  const counts = `submitted ${s.submitted}, succeeded ${s.succeeded}, failed ${s.failed}, refused ${s.refused}, skipped ${s.skipped}, already done ${s.alreadyDone}, remaining ${s.remaining}`;
  return `${counts}\nresults: ${out ? `saved in ${out}` : 'at the access links above'}`;
}

export async function runBatch(options: BatchOptions, io: Io): Promise<Summary> {
  const summary: Summary = { submitted: 0, succeeded: 0, failed: 0, refused: 0, skipped: 0, alreadyDone: 0, remaining: 0, interrupted: false };
  const folder = await stat(options.folder).catch(() => undefined);
  if (!folder?.isDirectory()) throw new UsageError(`${options.folder} is not a folder`);
  const files = await listFiles(options.folder, { recursive: options.recursive, exclude: options.out });
  const images = files.filter((file) => isImage(file.name));
  const names = images.map((file) => file.name);
  const outputs = options.out ? outputPaths(options.out, names) : new Map<string, string>();
  const saved = new Set<string>();
  for (const name of names) if (outputs.has(name) && (await exists(outputs.get(name)!))) saved.add(name);
  const batch: Batch = { options, io, limit: pLimit(options.concurrency), summary, outputs, saved, open: new Set(names) };
  for (const file of files.filter((file) => !isImage(file.name))) {
    summary.skipped++;
    warn(batch, `warning: ${file.name}: not an image (${IMAGE_EXTENSIONS.join(', ')}); skipped`);
  }
  try {
    if (names.some((name) => !saved.has(name))) await checkApi(batch);
    const followed = await Promise.all(images.map((file) => submitFile(batch, file)));
    const jobs = followed.filter((job): job is Followed => job !== undefined);
    if (options.out && jobs.length) await markResults(options.out);
    if (options.wait && jobs.length && !stopped(batch)) await followJobs(batch, jobs);
  } catch (error) {
    if (!stopped(batch)) throw error;
  } finally {
    summary.remaining = batch.open.size;
    summary.interrupted = stopped(batch);
    if (summary.interrupted) warn(batch, `stopped: ${summary.remaining} images not finished; the same command goes on where this one stopped (nothing is sent twice)`);
    say(batch, formatSummary(summary, options.out));
  }
  return summary;
}
