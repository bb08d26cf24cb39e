// Calls to Kafka and object storage share one deadline per request, so a dead or slow
// dependency costs the client at most DEPENDENCY_TIMEOUT_MS before a 503 with Retry-After.
import { ApiError, Unavailable } from './errors.js';

export type Dependency = 'kafka' | 'storage';

export class DeadlineExceeded extends Error {
  override name = 'DeadlineExceeded';
}

/** Settles with `work`, or rejects when `signal` aborts first; `work` itself may go on (a kafkajs send cannot be aborted). */
export function race<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(new DeadlineExceeded('deadline exceeded'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new DeadlineExceeded('deadline exceeded'));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** Runs one dependency call under the deadline; any failure that is not already an API error becomes Unavailable. */
export async function call<T>(dependency: Dependency, work: (signal: AbortSignal) => Promise<T>, signal: AbortSignal): Promise<T> {
  try {
    return await race(work(signal), signal);
  } catch (error) {
    if (error instanceof ApiError) throw error;
    throw new Unavailable(`${dependency === 'kafka' ? 'the queue (Kafka)' : 'object storage'} is unavailable; retry later`, {
      code: `${dependency}_unavailable`,
      cause: error,
    });
  }
}
