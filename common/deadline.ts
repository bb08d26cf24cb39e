// Waiting for work that cannot itself be aborted (a kafkajs send) no longer than a deadline.
export class DeadlineExceeded extends Error {
  override name = 'DeadlineExceeded';
}

/** Settles with `work`, or rejects when `signal` aborts first; `work` itself may go on (a kafkajs send cannot be aborted). */
export function race<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  // The work's own failure after the deadline (an AbortError) has no one left to hear it: it
  // must not become an unhandled rejection, which ends the process.
  work.catch(() => {});
  if (signal.aborted) return Promise.reject(new DeadlineExceeded('deadline exceeded'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new DeadlineExceeded('deadline exceeded'));
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
