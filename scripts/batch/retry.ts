// When to try a request again: the API's error answers as a typed error with a `retryable`
// flag, Retry-After honoured, and a bounded number of tries with backoff (p-retry).
import { setTimeout as sleep } from 'node:timers/promises';
import pRetry from 'p-retry';

export interface RetryPolicy {
  /** Tries in all, the first included. */
  tries: number;
  /** Backoff before the second try; doubles up to maxDelayMs. Added to any Retry-After wait. */
  minDelayMs: number;
  maxDelayMs: number;
  /** A longer Retry-After is cut to this, so one answer cannot stall the batch for hours. */
  maxRetryAfterMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { tries: 5, minDelayMs: 500, maxDelayMs: 5000, maxRetryAfterMs: 60_000 };

/** Statuses that say "not now" rather than "no": overload, unavailable dependencies, gateways. */
const RETRYABLE_STATUS = new Set([429, 502, 503, 504]);

/** An answer of the API that is not a success, with its {error: {code, message, field}}. */
export class HttpError extends Error {
  override name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    /** From Retry-After, in milliseconds. */
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }

  /** Worth another try of the same request; 409 idempotency_in_progress: the same key is still being handled. */
  get retryable(): boolean {
    return RETRYABLE_STATUS.has(this.status) || (this.status === 409 && this.code === 'idempotency_in_progress');
  }

  /** `400 validation_error: model_name: must be one of …` */
  override toString(): string {
    return `${this.status} ${this.code}: ${this.message}`;
  }
}

/** Retry-After as delay-seconds or an HTTP date; milliseconds from `now`, or undefined when absent or unreadable. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | undefined {
  const text = value?.trim();
  if (!text) return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  const at = Date.parse(text);
  // Date.parse also reads things that are no HTTP date (a bare "12.5"); require a weekday or month name.
  if (Number.isNaN(at) || !/[a-z]{3}/i.test(text)) return undefined;
  return Math.max(0, at - now);
}

interface ErrorJson {
  error?: { code?: unknown; message?: unknown; field?: unknown };
}

/** Reads the API's error body; a proxy's HTML page or an empty body still gives a readable error. */
export async function httpError(response: Response): Promise<HttpError> {
  const text = await response.text().catch(() => '');
  let body: ErrorJson = {};
  try {
    body = JSON.parse(text) as ErrorJson;
  } catch {
    // not JSON: fall through to the status text
  }
  const { code, message, field } = body.error ?? {};
  const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
  return new HttpError(
    response.status,
    typeof code === 'string' ? code : 'http_error',
    typeof message === 'string' ? message : `HTTP ${response.status} ${response.statusText}`.trim(),
    typeof field === 'string' ? field : undefined,
    retryAfterMs,
  );
}

/** One line for a failure: the API's answer, or what went wrong on the way (fetch hides it in `cause`). */
export function describeError(error: unknown): string {
  if (error instanceof HttpError) return error.toString();
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause as { code?: string; message?: string } | undefined;
  const detail = cause?.code ?? cause?.message;
  return detail ? `${error.message} (${detail})` : error.message;
}

export type RetryNotice = (error: Error, attempt: number, waitMs: number) => void;


/**
 * p-retry hands over only the TypeErrors that are network errors (fetch's "fetch failed");
 * a request that timed out is safe to send again because every submission carries its key.
 */
const isTransient = (error: Error) => (error instanceof HttpError ? error.retryable : error instanceof TypeError || error.name === 'TimeoutError');

/**
 * Runs `work` until it succeeds, fails for good, or the tries run out. Network errors, timeouts
 * and retryable HttpErrors are tried again; anything else is thrown at once, and so is `signal`'s
 * abort, also during a wait.
 */
export function withRetry<T>(work: () => Promise<T>, policy: RetryPolicy = DEFAULT_RETRY, notice?: RetryNotice, signal?: AbortSignal): Promise<T> {
  return pRetry(work, {
    signal,
    retries: policy.tries - 1,
    minTimeout: policy.minDelayMs,
    maxTimeout: policy.maxDelayMs,
    randomize: true,
    shouldRetry: ({ error }) => isTransient(error),
    onFailedAttempt: async ({ error, attemptNumber, retriesLeft }) => {
      if (!isTransient(error) || retriesLeft === 0) return;
      // p-retry's own backoff follows this wait, so a server's Retry-After is a floor, never shortened.
      const waitMs = error instanceof HttpError ? Math.min(error.retryAfterMs ?? 0, policy.maxRetryAfterMs) : 0;
      notice?.(error, attemptNumber, waitMs);
      if (waitMs > 0) await sleep(waitMs, undefined, { signal });
    },
  });
}
