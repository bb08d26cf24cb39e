// GET /docs: Swagger UI, its files served by the API itself from the swagger-ui-dist package,
// so the page works where nothing but this service can be reached (an air-gapped cluster).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { serveStatic } from '@hono/node-server/serve-static';
import { Hono } from 'hono';
import { DOCS_POLICY, withPolicy } from '../headers.js';
import { revalidated, WEB_PATH } from './page.js';

const require = createRequire(import.meta.url);
const SWAGGER_DIR = dirname(require.resolve('swagger-ui-dist/package.json'));
export const SWAGGER_VERSION: string = require('swagger-ui-dist/package.json').version;

/** The version is in the path: a new release gets new URLs, so a year of caching is safe. */
export const SWAGGER_PATH = `/vendor/swagger-ui-dist@${SWAGGER_VERSION}`;
const SWAGGER_FILES = ['swagger-ui-bundle.js', 'swagger-ui.css', 'favicon-32x32.png'];
const IMMUTABLE = 'public, max-age=31536000, immutable';

// No inline script: docs.js starts Swagger UI, so the policy allows scripts from this origin only.
const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>img2img API</title>
<link rel="icon" href="${SWAGGER_PATH}/favicon-32x32.png">
<link rel="stylesheet" href="${SWAGGER_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="${SWAGGER_PATH}/swagger-ui-bundle.js"></script>
<script src="${WEB_PATH}/docs.js"></script>
</body>
</html>
`;

export function docsRoutes() {
  const app = new Hono();
  app.get('/docs', withPolicy(DOCS_POLICY), revalidated(), (c) => c.html(page, 200, { 'Cache-Control': 'no-cache' }));
  for (const file of SWAGGER_FILES) {
    app.get(`${SWAGGER_PATH}/${file}`, serveStatic({ path: join(SWAGGER_DIR, file), onFound: (_, c) => c.header('Cache-Control', IMMUTABLE) }));
  }
  return app;
}
