// Calls to Kafka and object storage share one deadline per request, so a dead or slow
// dependency costs the client at most DEPENDENCY_TIMEOUT_MS before a 503 with Retry-After.
import { race } from '../common/deadline.js';
import { ApiError, Unavailable } from './errors.js';


export type Dependency = 'kafka' | 'storage';

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
