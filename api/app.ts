// The HTTP application: routes, the OpenAPI document and Swagger UI, and the one place where
// errors become responses. createApp does no I/O, so tests run it in-process on a real server.
import { OpenAPIHono } from '@hono/zod-openapi';
import type { Hook } from '@hono/zod-openapi';
import { PatternRouter } from 'hono/router/pattern-router';
import { fromZod, MethodNotAllowed, NotFound, toErrorResponse } from './errors.js';
import { corsFor, securityHeaders } from './headers.js';
import { diffusionRoutes } from './routes/diffusion.js';
import { docsRoutes } from './routes/docs.js';
import { eventRoutes } from './routes/events.js';
import { healthRoutes } from './routes/health.js';
import { jobListRoutes } from './routes/joblist.js';
import { jobRoutes } from './routes/jobs.js';
import { modelRoutes } from './routes/models.js';
import { pageRoutes } from './routes/page.js';
import { previewRoutes } from './routes/preview.js';
import { resultRoutes } from './routes/results.js';
import { webhookRoutes } from './routes/webhooks.js';
import { workerRoutes } from './routes/workers.js';
import type { Services } from './services.js';
import { requestContext, type AppEnv } from './env.js';
import { requestIds } from './requestid.js';
import { authenticate, authRequired } from './auth.js';

/** Every zod failure on a request part (query, path, headers) becomes one ValidationError naming the field. */
const validationHook: Hook<unknown, AppEnv, string, unknown> = (result) => {
  if (!result.success) throw fromZod(result.error, result.target);
};

/** The methods each path answers, from the app's routes; HEAD comes with GET (Hono answers it from the GET route). */
function methodsByPath(routes: ReadonlyArray<{ method: string; path: string }>): (path: string) => string[] {
  const router = new PatternRouter<string>();
  for (const { method, path } of routes) if (method !== 'ALL') router.add('GET', path, method); // one bucket: every route
  return (path) => {
    const methods = new Set(router.match('GET', path)[0].map(([method]) => method));
    if (!methods.size) return [];
    if (methods.has('GET')) methods.add('HEAD');
    return [...methods, 'OPTIONS'];
  };
}

export function createApp(services: Services) {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });
  app.use('*', requestIds());
  app.use('*', services.metrics.middleware);
  app.use('*', securityHeaders());
  const cors = corsFor(services.config);
  if (cors) app.use('*', cors);
  app.use('*', requestContext(services.config));
  app.use('*', authenticate(services.config, services.keys, services.limits));
  app.onError((error) => toErrorResponse(error, services.log));
  let methodsOf: ReturnType<typeof methodsByPath> | undefined;
  app.notFound((c) => {
    const allow = (methodsOf ??= methodsByPath(app.routes))(c.req.path);
    // The pattern router takes /path/ for /path, the app's routes do not: a method "allowed" here is a trailing slash.
    if (allow.includes(c.req.method) && c.req.path.endsWith('/')) {
      const hint = `no route for ${c.req.method} ${c.req.path}; did you mean ${c.req.path.replace(/\/+$/, '')}?`;
      return toErrorResponse(new NotFound(hint, { code: 'route_not_found' }), services.log);
    }
    if (!allow.length) return toErrorResponse(new NotFound(`no route for ${c.req.method} ${c.req.path}`, { code: 'route_not_found' }), services.log);
    // A known path: OPTIONS says what it takes, any other method is refused with the same list.
    if (c.req.method === 'OPTIONS') return c.body(null, 204, { Allow: allow.join(', ') });
    return toErrorResponse(new MethodNotAllowed(`${c.req.method} is not allowed on ${c.req.path}; it takes ${allow.join(', ')}`, allow), services.log);
  });

  app.route('/', diffusionRoutes(services));
  app.route('/', jobListRoutes(services));
  app.route('/', jobRoutes(services));
  app.route('/', previewRoutes(services));
  app.route('/', eventRoutes(services));
  app.route('/', resultRoutes(services));
  app.route('/', webhookRoutes(services));
  app.route('/', workerRoutes(services));
  app.route('/', modelRoutes(services));
  app.route('/', healthRoutes(services));
  app.get('/metrics', async (c) =>
    c.body(await services.registry.metrics(), 200, { 'Content-Type': services.registry.contentType }),
  );

  // Swagger UI's Authorize button takes a key; the job routes need one when the API requires keys.
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    description: 'An API key, made with `npm run keys -- create --tenant <t> --name <n>` (docs/API.md, "API keys")',
  });
  app.doc('/openapi.json', {
    openapi: '3.0.3',
    ...(authRequired(services.config) ? { security: [{ bearer: [] }] } : {}),
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
  // The two HTML pages, each with its own Content-Security-Policy, and their files.
  app.route('/', docsRoutes());
  app.route('/', pageRoutes());
  return app;
}
