// The API's metrics: every request by route pattern and status, and accepted jobs.
import type { MiddlewareHandler } from 'hono';
import { Counter, Histogram, type Registry } from 'prom-client';
import { SECONDS_BUCKETS } from '../common/metrics.js';

export interface ApiMetrics {
  /** Counts and times every request under its route pattern, never its raw path. */
  middleware: MiddlewareHandler;
  jobSubmitted(model: string, priority: string): void;
}

export function apiMetrics(registry: Registry): ApiMetrics {
  const registers = [registry];
  const labelNames = ['method', 'route', 'status'] as const;
  const requests = new Counter({ name: 'http_requests_total', help: 'HTTP requests answered', labelNames, registers });
  const duration = new Histogram({ name: 'http_request_duration_seconds', help: 'Time to answer an HTTP request (to the first byte of a stream)', labelNames, buckets: SECONDS_BUCKETS, registers });
  const submitted = new Counter({ name: 'img2img_jobs_submitted_total', help: 'Jobs accepted (202) by model and priority', labelNames: ['model', 'priority'], registers });

  const middleware: MiddlewareHandler = async (c, next) => {
    const started = performance.now();
    try {
      await next();
    } finally {
      // Unknown paths share one label so a scanner cannot blow up the series count.
      const route = c.req.routePath && c.req.routePath !== '/*' ? c.req.routePath : 'unmatched';
      const labels = { method: c.req.method, route, status: String(c.res.status) };
      requests.inc(labels);
      duration.observe(labels, (performance.now() - started) / 1000);
    }
  };
  return { middleware, jobSubmitted: (model, priority) => submitted.inc({ model, priority }) };
}
