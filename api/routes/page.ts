// GET /: the web page for people who want to try a model: plain HTML, CSS and one script from
// api/web/, no build step. It reads the parameters, their ranges and defaults from
// /openapi.json and the models from /api/models, so nothing here repeats common/params.json.
import { fileURLToPath } from 'node:url';
import { serveStatic } from '@hono/node-server/serve-static';
import { Hono } from 'hono';
import { etag, RETAINED_304_HEADERS } from 'hono/etag';
import { NotFound } from '../errors.js';
import { PAGE_POLICY, withPolicy } from '../headers.js';

/** Where api/web/ is served (the page's files, and docs.js for Swagger UI). */
export const WEB_PATH = '/web';
const WEB_DIR = fileURLToPath(new URL('../web/', import.meta.url));

// Not versioned, so every use asks again; the ETag makes that a 304 when nothing changed.
const revalidate = (_: string, c: { header(name: string, value: string): void }) => c.header('Cache-Control', 'no-cache');

/**
 * ETags for files that change with a release. A 304 must carry the page's own policy too: the
 * browser updates the headers it kept with the 304's, and would otherwise take the API's
 * default-src 'none' for the page.
 */
export const revalidated = () =>
  etag({ retainedHeaders: [...RETAINED_304_HEADERS, 'content-security-policy'] });

export function pageRoutes() {
  const app = new Hono();
  app.get('/', withPolicy(PAGE_POLICY), revalidated(), serveStatic({ path: `${WEB_DIR}index.html`, onFound: revalidate }));
  app.get(
    `${WEB_PATH}/*`,
    revalidated(),
    serveStatic({ root: WEB_DIR, rewriteRequestPath: (path) => path.slice(WEB_PATH.length), onFound: revalidate }),
    // No such file: a 404 like any unknown path (left to the app, the route would make it a 405).
    (c) => {
      throw new NotFound(`no route for ${c.req.method} ${c.req.path}`, { code: 'route_not_found' });
    },
  );
  return app;
}
