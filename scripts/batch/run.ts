// One batch: list the folder, submit every image (bounded concurrency), print its access link,
// and with --wait follow every job to its end and save the results.
import { access, readFile, stat } from 'node:fs/promises';
import { Presets, SingleBar } from 'cli-progress';
import pLimit, { type LimitFunction } from 'p-limit';
import { TERMINAL } from '../../common/jobs.js';
import { downloadResult, formFields, getJob, idempotencyKey, retryKey, sha256, submitImage, type Client, type JobAccepted } from './client.js';
import { IMAGE_EXTENSIONS, isImage, listFiles, markResults, outputPaths, type InputFile } from './files.js';
import { UsageError, type BatchOptions } from './options.js';
import { DEFAULT_RETRY, describeError, type RetryPolicy } from './retry.js';

export interface Io {
  fetch: typeof fetch;
  /** The access links and the summary. */
  stdout: NodeJS.WritableStream;
  /** Warnings, refusals, retries and the progress bar. */
  stderr: NodeJS.WritableStream;
  retry?: RetryPolicy;
  pollMs?: number;
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
}

interface Batch {
  options: BatchOptions;
  io: Io;
  limit: LimitFunction;
  summary: Summary;
  /** Each image's result under --out, chosen over the whole batch so that no two share one. */
  outputs: Map<string, string>;
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

const say = (batch: Batch, line: string) => batch.io.stdout.write(`${line}\n`);
const warn = (batch: Batch, line: string) => batch.io.stderr.write(`${line}\n`);
const exists = (path: string) => access(path).then(() => true, () => false);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function client(batch: Batch, file: InputFile): Client {
  const retry = batch.io.retry ?? DEFAULT_RETRY;
  return {
    fetch: batch.io.fetch,
    api: batch.options.api,
    apiKey: batch.options.apiKey,
    retry,
    notice: (error, attempt, waitMs) =>
      warn(batch, `${file.name}: ${describeError(error)}; try ${attempt + 1} of ${retry.tries}${waitMs ? ` after ${(waitMs / 1000).toFixed(1)} s` : ''}`),
  };
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

/** Submits one file and prints its line; returns the job to follow with --wait. */
async function submitFile(batch: Batch, file: InputFile): Promise<Followed | undefined> {
  const { options, summary } = batch;
  if (!isImage(file.name)) {
    summary.skipped++;
    warn(batch, `warning: ${file.name}: not an image (${IMAGE_EXTENSIONS.join(', ')}); skipped`);
    return undefined;
  }
  const output = batch.outputs.get(file.name);
  if (output && (await exists(output))) {
    summary.alreadyDone++;
    say(batch, `${file.name}\talready done: ${output}`);
    return undefined;
  }
  let job: JobAccepted;
  try {
    job = await batch.limit(() => sendFile(batch, file));
  } catch (error) {
    summary.refused++;
    warn(batch, `${file.name}: not submitted: ${describeError(error)}`);
    return undefined;
  }
  if (job.status === 'succeeded') {
    summary.alreadyDone++;
    say(batch, `${file.name}\t${job.result_url}\t(already done)`);
    return output ? { file, job, counted: false } : undefined;
  }
  if (NO_RESULT.has(job.status)) {
    summary.failed++;
    warn(batch, `${file.name}: ${MAX_FRESH_TRIES + 1} jobs in a row failed, were canceled or aborted (the last: ${job.id}); not submitted again`);
    return undefined;
  }
  summary.submitted++;
  say(batch, `${file.name}\t${job.result_url}`);
  return options.wait ? { file, job, counted: true } : undefined;
}

/** Polls the job until it is finished; returns why it failed, or undefined when it succeeded and is saved. */
async function finish(batch: Batch, { file, job }: Followed): Promise<string | undefined> {
  const api = client(batch, file);
  let state = await batch.limit(() => getJob(api, job.status_url));
  while (!TERMINAL.has(state.status)) {
    await sleep(batch.io.pollMs ?? DEFAULT_POLL_MS);
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
  await Promise.all(
    jobs.map(async (followed) => {
      const failure = await finish(batch, followed).catch(describeError);
      if (failure) failures.push(`${followed.file.name}: ${failure}`);
      if (failure) batch.summary.failed++;
      else if (followed.counted) batch.summary.succeeded++;
      bar.increment(1, { failed: failures.length });
    }),
  );
  bar.stop();
  for (const failure of failures.sort()) warn(batch, failure);
}

export const formatSummary = (s: Summary) =>
  `submitted ${s.submitted}, succeeded ${s.succeeded}, failed ${s.failed}, refused ${s.refused}, skipped ${s.skipped}, already done ${s.alreadyDone}`;

export async function runBatch(options: BatchOptions, io: Io): Promise<Summary> {
  const summary: Summary = { submitted: 0, succeeded: 0, failed: 0, refused: 0, skipped: 0, alreadyDone: 0 };
  const folder = await stat(options.folder).catch(() => undefined);
  if (!folder?.isDirectory()) throw new UsageError(`${options.folder} is not a folder`);
  const files = await listFiles(options.folder, { recursive: options.recursive, exclude: options.out });
  const images = files.filter((file) => isImage(file.name)).map((file) => file.name);
  const outputs = options.out ? outputPaths(options.out, images) : new Map<string, string>();
  const batch: Batch = { options, io, limit: pLimit(options.concurrency), summary, outputs };
  const followed = await Promise.all(files.map((file) => submitFile(batch, file)));
  const jobs = followed.filter((job): job is Followed => job !== undefined);
  if (options.out && jobs.length) await markResults(options.out);
  if (options.wait && jobs.length) await followJobs(batch, jobs);
  say(batch, formatSummary(summary));
  return summary;
}
