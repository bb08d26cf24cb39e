// The Hono environment of the API's routes, and the middleware that fills it once per request:
// the deadline of its calls to Kafka and object storage, and the base of the links it answers.
import type { Socket } from 'node:net';
import type { HttpBindings } from '@hono/node-server';
import type { MiddlewareHandler } from 'hono';
import type { ApiConfig } from '../common/config.js';
import type { ApiKey } from '../common/keys.js';

export type AppEnv = {
  /** Under @hono/node-server the Node request is at c.env.incoming. */
  Bindings: HttpBindings;
  Variables: {
    /** The request's dependency deadline; its clock starts at the first call (after the upload is read). */
    deadline: () => AbortSignal;
    /** Origin of the links in answers, without a trailing slash. */
    baseUrl: string;
    /** The API key of the request; undefined where no key is needed (auth off, open routes). */
    principal: ApiKey | undefined;
  };
};

/** The address and port a connection came in on: where this server listens, whatever the client claims. */
export function localOrigin(socket: Pick<Socket, 'localAddress' | 'localPort'>): string {
  const address = (socket.localAddress ?? '127.0.0.1').replace(/^::ffff:(?=\d+\.)/, ''); // IPv4 on a dual-stack socket
  return `http://${address.includes(':') ? `[${address}]` : address}:${socket.localPort}`;
}

type LinkConfig = Pick<ApiConfig, 'PUBLIC_BASE_URL' | 'ALLOWED_HOSTS'>;

/**
 * The origin of the links in answers. A link must only ever name this service, so the Host
 * header, which the client writes, counts only when ALLOWED_HOSTS lists it (`Host: evil.example`
 * must not put evil.example in every link): PUBLIC_BASE_URL when set (behind a proxy), else an
 * allowed Host, else the address the request came in on.
 */
export function baseUrl(config: LinkConfig, requestUrl: string, socket: Pick<Socket, 'localAddress' | 'localPort'>): string {
  if (config.PUBLIC_BASE_URL) return config.PUBLIC_BASE_URL.replace(/\/+$/, '');
  const host = new URL(requestUrl).host; // lower case, default port dropped
  const allowed = config.ALLOWED_HOSTS.some((entry) => new URL(`http://${entry}`).host === host);
  return allowed ? `http://${host}` : localOrigin(socket);
}

export function requestContext(config: Pick<ApiConfig, 'DEPENDENCY_TIMEOUT_MS'> & LinkConfig): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    let signal: AbortSignal | undefined;
    c.set('deadline', () => (signal ??= AbortSignal.timeout(config.DEPENDENCY_TIMEOUT_MS)));
    c.set('baseUrl', baseUrl(config, c.req.url, c.env.incoming.socket));
    await next();
  };
}
