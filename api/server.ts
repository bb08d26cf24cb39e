// The HTTP server around the app: listen, and shut down gracefully (stop accepting, end the
// SSE streams, let in-flight requests finish, disconnect from Kafka and storage).
import type { AddressInfo } from 'node:net';
import { createServer, type Server } from 'node:http';
import { getRequestListener } from '@hono/node-server';
import type { ApiConfig } from '../common/config.js';
import type { createApp } from './app.js';
import { errorResponse, ValidationError } from './errors.js';
import { stopServices, stopStreams, type Services } from './services.js';

export type HttpLimits = Pick<ApiConfig, 'MAX_BODY_BYTES' | 'HTTP_HEADERS_TIMEOUT_MS' | 'HTTP_REQUEST_TIMEOUT_MS' | 'HTTP_KEEP_ALIVE_TIMEOUT_MS'>;

/**
 * A request the adapter cannot even turn into a URL (a Host header missing or malformed):
 * answered in the API's error shape rather than the adapter's bare text.
 */
const malformedRequest = () => {
  const response = errorResponse(
    new ValidationError('Host', 'Host: the header is missing or malformed', { code: 'bad_request', closeConnection: true }),
  );
  response.headers.set('X-Content-Type-Options', 'nosniff');
  return response;
};

export interface Listening {
  server: Server;
  /** http://host:port of the bound socket (port 0 picks a free one). */
  url: string;
}

export function listen(app: ReturnType<typeof createApp>, hostname: string, port: number, limits: HttpLimits): Promise<Listening> {
  const handle = getRequestListener(app.fetch, { errorHandler: malformedRequest });
  const server = createServer(
    {
      // 64 KiB of headers: a 2000-character prompt in the query string fits even percent-encoded.
      maxHeaderSize: 64 * 1024,
      // A slow client holds a connection only this long (Node's defaults: 60 s, 300 s, 5 s).
      headersTimeout: limits.HTTP_HEADERS_TIMEOUT_MS,
      requestTimeout: limits.HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeout: limits.HTTP_KEEP_ALIVE_TIMEOUT_MS,
      // How often those are checked (Node's default: every 30 s).
      connectionsCheckingInterval: 1000,
    },
    handle,
  );
  // Expect: 100-continue. Node would invite every body at once; a body over the limit is not
  // invited: the 413 comes first, and the connection closes (the client never sent the body).
  server.on('checkContinue', (incoming, outgoing) => {
    if (Number(incoming.headers['content-length'] ?? 0) <= limits.MAX_BODY_BYTES) outgoing.writeContinue();
    else outgoing.shouldKeepAlive = false;
    void handle(incoming, outgoing);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, hostname, () => {
      const info = server.address() as AddressInfo;
      const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
      resolve({ server, url: `http://${host}:${info.port}` });
    });
  });
}

/**
 * Resolves when every connection is closed and every client disconnected. In-flight requests
 * finish first (up to `graceMs`), with Kafka and storage still connected: a submission being
 * enqueued during a rolling deploy gets its 202, not a 503.
 */
export async function shutdown(server: Server, services: Services, graceMs = 10_000): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  await stopStreams(services);
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  await closed;
  clearTimeout(timer);
  await stopServices(services);
}
