// GET /api/jobs/{id}/preview: the latest preview of a running job that asked for them
// (preview_every): a small WebP of its latents. It lives only while the job runs: the consumer
// deletes it when the run ends, and a job that is not running has none to show.
import { Readable } from 'node:stream';
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { jobKeys } from '../../common/storage.js';
import { call } from '../dependency.js';
import type { AppEnv } from '../env.js';
import { NotFound } from '../errors.js';
import { loadJob } from '../lookup.js';
import { authFailures, errorResponse, JobIdParam, keyed, unauthorized, unavailable } from '../schemas.js';
import type { Services } from '../services.js';

const noPreview = (status: string) => new NotFound(`the job has no preview now (it is ${status}; previews exist only while a job with preview_every runs)`, { code: 'no_preview' });

const route = createRoute({
  method: 'get',
  path: '/api/jobs/{id}/preview',
  operationId: 'getJobPreview',
  tags: ['jobs'],
  summary: 'The latest preview of a running job',
  description:
    'A small WebP of the job’s latents projected to colours (an eighth of the image’s side), the latest its runner sent: ' +
    'every preview_every steps, at most two a second. Exists only while the job runs; the `preview` events of its stream say when a new one is there.',
  request: { params: JobIdParam },
  responses: keyed({
    200: {
      description: 'The preview',
      headers: { 'Cache-Control': { schema: { type: 'string', example: 'no-store' } } },
      content: { 'image/webp': { schema: z.string().openapi({ type: 'string', format: 'binary' }) } },
    },
    401: unauthorized,
    429: authFailures,
    404: errorResponse('No job has this id, or it has no preview now (not running, or it asked for none)', {
      code: 'no_preview',
      message: 'the job has no preview now (it is succeeded; previews exist only while a job with preview_every runs)',
    }),
    503: unavailable('Object storage is unavailable', { code: 'storage_unavailable', message: 'object storage is unavailable; retry later' }),
  }),
});

export function previewRoutes(services: Services) {
  const { records, store } = services;
  return new OpenAPIHono<AppEnv>().openapi(route, async (c) => {
    const record = await loadJob(records, c.req.valid('param').id, c.var.deadline(), c.var.principal);
    if (record.status !== 'running') throw noPreview(record.status);
    const object = await call('storage', (s) => store.open(jobKeys(record.id).preview, s), c.var.deadline());
    if (!object) throw noPreview(record.status);
    const headers: Record<string, string> = { 'Content-Type': 'image/webp', 'Cache-Control': 'no-store' };
    if (object.length !== undefined) headers['Content-Length'] = String(object.length);
    return c.body(Readable.toWeb(object.body) as ReadableStream, 200, headers);
  });
}
