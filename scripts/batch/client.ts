// The three requests the batch client makes: submit an image, read a job, fetch its result.
// Each is retried by withRetry; the answers are read with the API's own response schemas.
import { createHash } from 'node:crypto';
import { link, mkdir, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, extname } from 'node:path';
import { z } from 'zod';
import { JobAccepted, JobView } from '../../common/view.js';
import type { JobRequest } from './options.js';
import { DEFAULT_RETRY, describeError, HttpError, httpError, withRetry, type RetryNotice, type RetryPolicy } from './retry.js';

/** Only what the client reads, so a field added to the job does not break it. */
const JobState = JobView.pick({ id: true, status: true, error: true, result_url: true });
export type JobAccepted = ReturnType<typeof JobAccepted.parse>;
export type JobState = ReturnType<typeof JobState.parse>;

export interface Client {
  fetch: typeof fetch;
  /** The API's base URL, without a trailing slash. */
  api: string;
  /** Sent as Authorization: Bearer, when the API needs keys. */
  apiKey?: string;
  retry?: RetryPolicy;
  /** Told before each retry (which file, what went wrong, how long it waits). */
  notice?: RetryNotice;
  /** Aborts the requests in flight and their retries (Ctrl-C). */
  signal?: AbortSignal;
}

/** One request gets this long, upload included; a timed-out request is tried again. */
const REQUEST_TIMEOUT_MS = 120_000;

const MEDIA_TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp' };

/** The request's form fields, as the API names them; fields left unset are not sent. */
export function formFields(request: JobRequest): Record<string, string> {
  const fields: Record<string, string | number | undefined> = {
    model_name: request.model,
    prompt: request.prompt,
    priority: request.priority,
    negative_prompt: request.negativePrompt,
    strength: request.strength,
    steps: request.steps,
    guidance_scale: request.guidanceScale,
    seed: request.seed,
  };
  return Object.fromEntries(Object.entries(fields).flatMap(([name, value]) => (value === undefined ? [] : [[name, String(value)]])));
}

export const sha256 = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');

/**
 * sha256 of the image bytes and every field sent: the same file with the same request gets the
 * same key, so the API answers with the job it already made instead of making another.
 */
export function idempotencyKey(imageSha256: string, fields: Record<string, string>): string {
  const sorted = Object.entries(fields).sort(([a], [b]) => (a < b ? -1 : 1));
  return sha256(JSON.stringify(['img2img-batch/1', imageSha256, sorted]));
}

/**
 * The key for a new try of a file whose earlier job failed or was canceled: still derived from
 * the request alone (and that job), so re-runs keep answering with the same new job.
 */
export const retryKey = (key: string, failedJobId: string) => sha256(JSON.stringify([key, 'after', failedJobId]));

async function send(client: Client, url: string, init: RequestInit = {}): Promise<Response> {
  return withRetry(
    async () => {
      const auth: Record<string, string> = client.apiKey ? { Authorization: `Bearer ${client.apiKey}` } : {};
      const headers = { ...(init.headers as Record<string, string> | undefined), ...auth };
      const timeout = AbortSignal.timeout(REQUEST_TIMEOUT_MS);
      const signal = client.signal ? AbortSignal.any([timeout, client.signal]) : timeout;
      const response = await client.fetch(url, { ...init, headers, signal });
      if (response.status >= 400) throw await httpError(response);
      return response;
    },
    client.retry ?? DEFAULT_RETRY,
    client.notice,
    client.signal,
  );
}

/** Only what the client reads of GET /api/models; an API that does not check model sources sends no `available`. */
const ModelList = z.object({
  models: z.array(z.object({ name: z.string(), available: z.boolean().optional(), unavailable_reason: z.string().nullable().optional() })),
});

/**
 * Why a batch for `model` cannot run against this API, or undefined when it can: the API does
 * not answer, is not this API, does not serve the model, or found its source unusable. Asks
 * GET /api/models, which answers everyone, keys or not.
 */
export async function modelProblem(client: Client, model: string): Promise<string | undefined> {
  let response: Response;
  try {
    response = await send(client, `${client.api}/api/models`, { headers: { Accept: 'application/json' } });
  } catch (error) {
    if (client.signal?.aborted) throw error;
    if (error instanceof HttpError) return `the API at ${client.api} answered GET /api/models with ${error}`;
    return `cannot reach the API at ${client.api}: ${describeError(error)}`;
  }
  const list = ModelList.safeParse(await response.json().catch(() => undefined));
  if (!list.success) return `${client.api} is not the img2img API: GET /api/models answered no list of models`;
  const found = list.data.models.find((entry) => entry.name === model);
  if (!found) return `--model ${model}: the API at ${client.api} does not serve it; it serves ${list.data.models.map((entry) => entry.name).join(', ') || 'no model'}`;
  if (found.available === false) return `--model ${model}: unavailable at ${client.api}: ${found.unavailable_reason ?? 'no reason given'}`;
  return undefined;
}

/** POST /api/diffusion as multipart; 202 with the job (a new one, or the one this key already made). */
export async function submitImage(client: Client, image: { bytes: Uint8Array<ArrayBuffer>; filename: string }, fields: Record<string, string>, key: string): Promise<JobAccepted> {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) form.append(name, value);
  const type = MEDIA_TYPES[extname(image.filename).toLowerCase()] ?? 'application/octet-stream';
  form.append('image', new Blob([image.bytes], { type }), basename(image.filename));
  const response = await send(client, `${client.api}/api/diffusion`, { method: 'POST', body: form, headers: { 'Idempotency-Key': key } });
  return JobAccepted.parse(await response.json());
}

export async function getJob(client: Client, statusUrl: string): Promise<JobState> {
  const response = await send(client, statusUrl, { headers: { Accept: 'application/json' } });
  return JobState.parse(await response.json());
}

/** GET the result and write it to `dest` through a temporary name, so a cut download never looks finished. */
export async function downloadResult(client: Client, resultUrl: string, dest: string): Promise<void> {
  const response = await send(client, resultUrl);
  if (response.status !== 200) throw new Error(`the result is not ready (HTTP ${response.status})`);
  const bytes = new Uint8Array(await response.arrayBuffer());
  await mkdir(dirname(dest), { recursive: true });
  const partial = `${dest}.${process.pid}.part`;
  await writeFile(partial, bytes);
  // link, not rename: it fails where a file already is, so no result is ever written over
  // (another run's, or one the user put there since this run looked).
  try {
    await link(partial, dest);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new Error(`${dest} already exists; not overwritten`);
    throw error;
  } finally {
    await rm(partial, { force: true });
  }
}
