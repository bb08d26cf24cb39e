// Prometheus metrics: one registry per process, with Node's process metrics, served
// as text at /metrics (the API mounts it on its app; consumers and dispatchers on their own port).
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Registry } from 'prom-client';

export function createRegistry(component: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** Latency buckets from 5 ms to 10 min: HTTP calls and GPU jobs on one scale. */
export const SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export function serveMetrics(registry: Registry, host: string, port: number): Promise<Server> {
  const server = createServer((request, response) => {
    if (request.url !== '/metrics') {
      response.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"not_found","message":"try /metrics"}}');
      return;
    }
    registry.metrics().then(
      (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (error: Error) => response.writeHead(500).end(error.message),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

/** http://host:port/metrics of a metrics server once it listens (port 0 picks a free one). */
export function metricsUrlOf(server: Server | undefined, host: string): string | undefined {
  const address = server?.address() as AddressInfo | null | undefined;
  return address ? `http://${host}:${address.port}/metrics` : undefined;
}
