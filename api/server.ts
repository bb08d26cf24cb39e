// The HTTP server around the app: listen, and shut down gracefully (stop accepting, end the
// SSE streams, let in-flight requests finish, disconnect from Kafka and storage).
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import type { createApp } from './app.js';
import { stopServices, type Services } from './services.js';

export interface Listening {
  server: Server;
  /** http://host:port of the bound socket (port 0 picks a free one). */
  url: string;
}

export function listen(app: ReturnType<typeof createApp>, hostname: string, port: number): Promise<Listening> {
  return new Promise((resolve, reject) => {
    // 64 KiB of headers: a 2000-character prompt in the query string fits even percent-encoded.
    const serverOptions = { maxHeaderSize: 64 * 1024 };
    const server = serve({ fetch: app.fetch, hostname, port, serverOptions }, (info: AddressInfo) => {
      const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
      resolve({ server: server as Server, url: `http://${host}:${info.port}` });
    }) as Server;
    server.once('error', reject);
  });
}

/** Resolves when every connection is closed and every client disconnected; in-flight requests may finish first. */
export async function shutdown(server: Server, services: Services, graceMs = 10_000): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  await stopServices(services); // ends the SSE streams, which would otherwise hold the server open
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), graceMs);
  await closed;
  clearTimeout(timer);
}
