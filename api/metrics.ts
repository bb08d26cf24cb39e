// The API's metrics: every request by route pattern and status, accepted jobs, the oldest queued
// job of each model and priority, and whether each dependency of /readyz answers. The API runs
// while a model's consumers are scaled to zero, so what waits is seen from here.
import type { MiddlewareHandler } from 'hono';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { ModelAges } from '../common/age.js';
import { race } from '../common/deadline.js';
import type { DependencyStates } from './readiness.js';
import { SECONDS_BUCKETS } from '../common/metrics.js';

export interface ApiMetrics {
  /** Counts and times every request under its route pattern, never its raw path. */
  middleware: MiddlewareHandler;
  jobSubmitted(model: string, priority: string): void;
}

/** The name a dependency of /readyz goes by in img2img_dependency_up: the limits' check is Redis. */
const DEPENDENCY_NAMES: Record<keyof DependencyStates, string> = { kafka: 'kafka', storage: 'storage', limits: 'redis' };

export interface ApiSources {
  ages: () => Promise<Map<string, ModelAges>>;
  dependencies: () => Promise<DependencyStates>;
}

export function apiMetrics(registry: Registry, sources?: ApiSources): ApiMetrics {
  const registers = [registry];
  const labelNames = ['method', 'route', 'status'] as const;
  const requests = new Counter({ name: 'http_requests_total', help: 'HTTP requests answered', labelNames, registers });
  const duration = new Histogram({ name: 'http_request_duration_seconds', help: 'Time to answer an HTTP request (to the first byte of a stream)', labelNames, buckets: SECONDS_BUCKETS, registers });
  const submitted = new Counter({ name: 'img2img_jobs_submitted_total', help: 'Jobs accepted (202) by model and priority', labelNames: ['model', 'priority'], registers });

  if (sources) watch(registry, sources);

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

/**
 * The queue's ages a scrape waits for at most: with Kafka down their lookup retries for long, and a
 * scrape that times out would lose img2img_dependency_up too, the very series that says so.
 */
export const AGES_WAIT_MS = 1000;

/** Gauges read at each scrape: a failed or late read leaves the queue's ages out, never stale. */
function watch(registry: Registry, sources: ApiSources): void {
  const registers = [registry];
  new Gauge({
    name: 'img2img_queue_oldest_seconds',
    help: "Age of each model's oldest queued job by priority: since the acceptance of the first message its consumers have not committed (0: none waits)",
    labelNames: ['model', 'priority'],
    registers,
    async collect() {
      this.reset();
      const ages = await race(sources.ages(), AbortSignal.timeout(AGES_WAIT_MS)).catch(() => undefined);
      for (const [model, perPriority] of ages ?? []) for (const [priority, age] of Object.entries(perPriority)) this.set({ model, priority }, age);
    },
  });
  new Gauge({
    name: 'img2img_dependency_up',
    help: 'Whether a dependency answers the check of GET /readyz (1) or not (0): kafka, storage, redis (with API keys)',
    labelNames: ['dependency'],
    registers,
    async collect() {
      const states = await sources.dependencies();
      for (const [check, state] of Object.entries(states) as [keyof DependencyStates, string][]) this.set({ dependency: DEPENDENCY_NAMES[check] }, state === 'ok' ? 1 : 0);
    },
  });
}
