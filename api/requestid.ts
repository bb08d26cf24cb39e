// Every request's id: the X-Request-Id the client sent when it is 1-128 of A-Z a-z 0-9 _ - =
// (so a proxy's id follows the request through), else a fresh UUID (hono/request-id). It is
// answered in X-Request-Id, added as request_id to every log line written while the request is
// handled (the API logger's mixin reads it), and sent in the body of an error answer.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { MiddlewareHandler } from 'hono';
import { requestId } from 'hono/request-id';

/** Longer incoming ids are replaced: a log field, not a place for a client's payload. */
export const MAX_REQUEST_ID_LENGTH = 128;

const current = new AsyncLocalStorage<string>();

/** The id of the request being handled here, or undefined outside a request. */
export const currentRequestId = (): string | undefined => current.getStore();

/** The logger's mixin: `request_id` on each line logged within a request. */
export const requestIdMixin = (): Record<string, string> => {
  const id = current.getStore();
  return id ? { request_id: id } : {};
};

/** Assigns the id, handles the rest of the request under it, and answers it in X-Request-Id. */
export function requestIds(): MiddlewareHandler {
  const assign = requestId({ limitLength: MAX_REQUEST_ID_LENGTH });
  return (c, next) =>
    assign(c, async () => {
      const id = c.get('requestId') as string;
      await current.run(id, next);
      // Also on answers built as a Response (the errors' JSON), which c.header does not reach.
      c.res.headers.set('X-Request-Id', id);
    });
}
