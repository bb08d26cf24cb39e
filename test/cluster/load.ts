// A steady load of submissions (open loop: one every 1/rate s, whatever the answers), what each
// got, and the accounting every cluster fault ends with: each 202 job succeeded once, with one
// output and one `succeeded` event; every refusal a 503 with Retry-After.
import type { JobEvent, JobRecord } from '../../common/jobs.js';
import { jobKeys } from '../../common/storage.js';
import { json, postJob, type TestApi } from '../helpers/api.js';
import { pngOf, waitFor } from '../helpers/consumer.js';
import { countOf, type Count } from '../helpers/faults.js';

export interface Submission {
  seq: number;
  /** ms since the epoch when the request was sent, and when its answer came (or it gave up). */
  sentAt: number;
  answeredAt: number;
  /** HTTP status; 0 when no answer came within the client's timeout. */
  status: number;
  retryAfter: string | null;
  id?: string;
}

/** No answer within this long counts as a failure of its own (status 0). */
const CLIENT_TIMEOUT_MS = 30_000;

async function submit(api: TestApi, seq: number, image: Buffer): Promise<Submission> {
  const sentAt = Date.now();
  try {
    const response = await postJob(api.url, { image, query: { model_name: 'tiny', prompt: 'cluster', seed: String(seq) } });
    const body = response.status === 202 ? await json(response) : (await response.body?.cancel(), undefined);
    return { seq, sentAt, answeredAt: Date.now(), status: response.status, retryAfter: response.headers.get('retry-after'), id: body?.id as string | undefined };
  } catch {
    return { seq, sentAt, answeredAt: Date.now(), status: 0, retryAfter: null };
  }
}

export interface Load {
  /** Resolves with every submission once the last one has its answer. */
  done: Promise<Submission[]>;
  /** Submissions answered so far. */
  answered: Submission[];
  /** No more submissions after this call. */
  stop(): void;
}

/** `rate` submissions a second until stop() (at most `maxSeconds`), each a 64x64 PNG for the `tiny` model. */
export async function steadyLoad(api: TestApi, rate: number, maxSeconds: number): Promise<Load> {
  const images = await Promise.all([1, 2, 3, 4].map((seed) => pngOf(64, 64, seed)));
  const answered: Submission[] = [];
  const pending: Promise<Submission>[] = [];
  const total = Math.round(rate * maxSeconds);
  const start = Date.now();
  let stopped = false;
  const done = (async () => {
    for (let seq = 0; seq < total && !stopped; seq++) {
      const due = start + (seq * 1000) / rate;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - Date.now())));
      if (stopped) break;
      pending.push(
        withTimeout(submit(api, seq, images[seq % images.length]!), seq).then((s) => {
          answered.push(s);
          return s;
        }),
      );
    }
    return Promise.all(pending);
  })();
  return { done, answered, stop: () => void (stopped = true) };
}

const withTimeout = (submission: Promise<Submission>, seq: number) =>
  Promise.race([
    submission,
    new Promise<Submission>((resolve) => {
      const sentAt = Date.now();
      setTimeout(() => resolve({ seq, sentAt, answeredAt: Date.now(), status: 0, retryAfter: null }), CLIENT_TIMEOUT_MS).unref();
    }),
  ]);

export interface Outcome {
  count: Count;
  /** The accepted jobs' records as they ended (undefined: none could be read). */
  records: (JobRecord | undefined)[];
  figures: Record<string, number>;
  /** Statuses other than 202 and 503 (a 500, no answer): each one a failure. */
  unexpected: Submission[];
  /** 503s without Retry-After. */
  bare503: number;
  /** Accepted jobs whose output object is missing or empty. */
  missingOutputs: string[];
  /** Accepted jobs that ended other than succeeded. */
  notSucceeded: JobRecord[];
}

/** Waits until every accepted job has ended (bounded), then counts. */
export async function settle(api: TestApi, submissions: Submission[], events: { events: JobEvent[] }, timeoutMs = 180_000): Promise<Outcome> {
  const accepted = submissions.filter((s) => s.status === 202 && s.id).map((s) => s.id!);
  const records = new Map<string, JobRecord | undefined>();
  const deadline = Date.now() + timeoutMs;
  for (const id of accepted) {
    const left = Math.max(1000, deadline - Date.now());
    const record = await waitFor(
      async () => {
        const current = await api.services.records.get(id).catch(() => undefined);
        return current && ['succeeded', 'failed', 'canceled'].includes(current.status) ? current : undefined;
      },
      left,
      `job ${id} to end`,
    ).catch(() => api.services.records.get(id).catch(() => undefined));
    records.set(id, record);
  }
  // Events are published at least once after the record ends: give the last ones a moment.
  const ended = (id: string) => events.events.some((e) => e.id === id && ['succeeded', 'failed', 'canceled'].includes(e.type));
  await waitFor(async () => (accepted.every(ended) ? true : undefined), 30_000, 'every ending event').catch(() => {});

  const missingOutputs: string[] = [];
  for (const id of accepted) {
    const output = await api.services.store.get(jobKeys(id).output).catch(() => undefined);
    if (!output || output.bytes.length === 0) missingOutputs.push(id);
  }
  const list = accepted.map((id) => records.get(id));
  const count = countOf(submissions.length, list, events.events);
  const tally = (status: number) => submissions.filter((s) => s.status === status).length;
  return {
    count,
    records: list,
    figures: { answered_202: tally(202), answered_503: tally(503), other_answers: submissions.length - tally(202) - tally(503), outputs: accepted.length - missingOutputs.length },
    unexpected: submissions.filter((s) => s.status !== 202 && s.status !== 503),
    bare503: submissions.filter((s) => s.status === 503 && !s.retryAfter).length,
    missingOutputs,
    notSucceeded: list.filter((r): r is JobRecord => !!r && r.status !== 'succeeded'),
  };
}

/**
 * From the answers around a fault at `at`: how long submissions were refused (the last refused
 * request sent after the fault, 0 if none was), and the slowest answer meanwhile.
 */
export function acceptance(submissions: Submission[], at: number): { refused_for_s: number; slowest_answer_s: number } {
  const after = submissions.filter((s) => s.sentAt >= at);
  const refused = after.filter((s) => s.status !== 202);
  const lastRefused = refused.length ? Math.max(...refused.map((s) => s.sentAt)) : at;
  return {
    refused_for_s: round((lastRefused - at) / 1000),
    slowest_answer_s: round(Math.max(0, ...after.map((s) => s.answeredAt - s.sentAt)) / 1000),
  };
}

/**
 * How long after a fault at `at` the system took new work end to end on every partition of the
 * job topic again: per partition, the first job submitted after `at` that a runner started (the
 * slowest partition counts; jobs already buffered by the consumer do not count). And the longest
 * a job submitted after `at` waited from its record's creation to its start.
 */
export function servedAgain(
  records: JobRecord[],
  partitionOf: Map<string, number>,
  at: number,
): { served_again_s: number; longest_wait_s: number; longest_wait_before_s: number } {
  const first = new Map<number, number>();
  let longest = 0;
  let longestBefore = 0;
  for (const record of records) {
    const partition = partitionOf.get(record.id);
    const created = Date.parse(record.created_at);
    if (partition === undefined || !record.started_at) continue;
    const started = Date.parse(record.started_at);
    if (created < at) {
      longestBefore = Math.max(longestBefore, started - created);
      continue;
    }
    first.set(partition, Math.min(first.get(partition) ?? Infinity, started));
    longest = Math.max(longest, started - created);
  }
  return {
    served_again_s: first.size ? round((Math.max(...first.values()) - at) / 1000) : NaN,
    longest_wait_s: round(longest / 1000),
    longest_wait_before_s: round(longestBefore / 1000),
  };
}

/**
 * The longest time no job started, in the window before `at` (from `from`) and after it (to the
 * last start): a consumer that stalls shows a gap, whatever the backlog.
 */
export function startGaps(records: JobRecord[], from: number, at: number): { before_s: number; after_s: number } {
  const starts = records
    .map((r) => (r.started_at ? Date.parse(r.started_at) : NaN))
    .filter((t) => t >= from)
    .sort((a, b) => a - b);
  let before = 0;
  let after = 0;
  for (let i = 1; i < starts.length; i++) {
    const [previous, next] = [starts[i - 1]!, starts[i]!];
    if (next < at) before = Math.max(before, next - previous);
    else after = Math.max(after, next - Math.max(previous, at)); // a gap across the fault counts from the fault
  }
  return { before_s: round(before / 1000), after_s: round(after / 1000) };
}

export const round = (x: number) => Math.round(x * 10) / 10;
