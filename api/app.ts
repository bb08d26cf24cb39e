// The HTTP application: routes, the OpenAPI document and Swagger UI, and the one place where
// errors become responses. createApp does no I/O, so tests run it in-process on a real server.
import { OpenAPIHono } from '@hono/zod-openapi';
import { swaggerUI } from '@hono/swagger-ui';
import type { Hook } from '@hono/zod-openapi';
import { NotFound, toErrorResponse, ValidationError } from './errors.js';
import { diffusionRoutes } from './routes/diffusion.js';
import { eventRoutes } from './routes/events.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { modelRoutes } from './routes/models.js';
import { resultRoutes } from './routes/results.js';
import type { Services } from './services.js';

/** Header names are matched in lower case; errors name them as clients write them. */
const HEADER_NAMES: Record<string, string> = { 'idempotency-key': 'Idempotency-Key', 'last-event-id': 'Last-Event-ID', 'if-none-match': 'If-None-Match' };

/** A zod failure on any request part becomes a ValidationError naming the first field at fault. */
const validationHook: Hook<unknown, never, string, unknown> = (result) => {
  if (result.success) return;
  const issue = result.error.issues[0]!;
  const path = String(issue.path[0] ?? result.target);
  const field = result.target === 'header' ? (HEADER_NAMES[path] ?? path) : path;
  throw new ValidationError(field, `${field}: ${issue.message}`);
};

export function createApp(services: Services) {
  const app = new OpenAPIHono({ defaultHook: validationHook });
  app.onError((error) => toErrorResponse(error, services.log));
  app.notFound((c) => toErrorResponse(new NotFound(`no route for ${c.req.method} ${c.req.path}`, { code: 'route_not_found' }), services.log));

  app.route('/', diffusionRoutes(services));
  app.route('/', jobRoutes(services));
  app.route('/', eventRoutes(services));
  app.route('/', resultRoutes(services));
  app.route('/', modelRoutes(services));
  app.route('/', healthRoutes(services));

  app.doc('/openapi.json', {
    openapi: '3.0.3',
    info: {
      title: 'img2img API',
      version: '1.0.0',
      description: 'Submit img2img jobs, follow them live, and fetch their results. See docs/API.md.',
    },
    tags: [
      { name: 'jobs', description: 'Submit, follow, cancel, fetch results' },
      { name: 'models', description: 'Served models and queue depth' },
      { name: 'health', description: 'Liveness and readiness probes' },
    ],
  });
  app.get('/docs', swaggerUI({ url: '/openapi.json', title: 'img2img API' }));
  return app;
}
