// The HTTP application: routes, the OpenAPI document and Swagger UI, and the one place where
// errors become responses. createApp does no I/O, so tests run it in-process on a real server.
import { OpenAPIHono } from '@hono/zod-openapi';
import { swaggerUI } from '@hono/swagger-ui';
import type { Hook } from '@hono/zod-openapi';
import { fromZod, NotFound, toErrorResponse } from './errors.js';
import { diffusionRoutes } from './routes/diffusion.js';
import { eventRoutes } from './routes/events.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { modelRoutes } from './routes/models.js';
import { resultRoutes } from './routes/results.js';
import type { Services } from './services.js';
import { requestContext, type AppEnv } from './env.js';

/** Every zod failure on a request part (query, path, headers) becomes one ValidationError naming the field. */
const validationHook: Hook<unknown, AppEnv, string, unknown> = (result) => {
  if (!result.success) throw fromZod(result.error, result.target);
};

export function createApp(services: Services) {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
  app.use('*', services.metrics.middleware);
  app.use('*', requestContext(services.config));
  app.onError((error) => toErrorResponse(error, services.log));
  app.notFound((c) => toErrorResponse(new NotFound(`no route for ${c.req.method} ${c.req.path}`, { code: 'route_not_found' }), services.log));

  app.route('/', diffusionRoutes(services));
  app.route('/', jobRoutes(services));
  app.route('/', eventRoutes(services));
  app.route('/', resultRoutes(services));
  app.route('/', modelRoutes(services));
  app.route('/', healthRoutes(services));
  app.get('/metrics', async (c) =>
    c.body(await services.registry.metrics(), 200, { 'Content-Type': services.registry.contentType }),
  );

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
