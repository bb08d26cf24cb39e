// The Hono environment of the API's routes, and the middleware that fills it once per request:
// the deadline of its calls to Kafka and object storage, and the base of the links it answers.
import type { HttpBindings } from '@hono/node-server';
import type { MiddlewareHandler } from 'hono';
import type { ApiConfig } from '../common/config.js';

export type AppEnv = {
  /** Under @hono/node-server the Node request is at c.env.incoming. */
  Bindings: HttpBindings;
  Variables: {
    /** The request's dependency deadline; its clock starts at the first call (after the upload is read). */
    deadline: () => AbortSignal;
    /** Origin of the links in answers, without a trailing slash. */
    baseUrl: string;
  };
};

/** PUBLIC_BASE_URL when set (behind a proxy), else the origin the request came to. */
export const baseUrl = (publicBaseUrl: string | undefined, requestUrl: string) =>
  (publicBaseUrl ?? new URL(requestUrl).origin).replace(/\/+$/, '');

export function requestContext(config: Pick<ApiConfig, 'DEPENDENCY_TIMEOUT_MS' | 'PUBLIC_BASE_URL'>): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    let signal: AbortSignal | undefined;
    c.set('deadline', () => (signal ??= AbortSignal.timeout(config.DEPENDENCY_TIMEOUT_MS)));
    c.set('baseUrl', baseUrl(config.PUBLIC_BASE_URL, c.req.url));
    await next();
  };
}
