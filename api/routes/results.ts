// GET /api/results/{id}: the access link. The image once it exists (immutable: the output of
// a job never changes), 202 while the job is pending, 409 when it will never exist.
// The image is cacheable by the client only, never by a shared cache: results belong to whoever
// submitted the job.
import { Readable } from 'node:stream';
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { JobRecord } from '../../common/jobs.js';
import { call } from '../dependency.js';
import { Conflict, Gone } from '../errors.js';
import { loadJob } from '../lookup.js';
import { errorResponse, authFailures, keyed, retryAfter, unauthorized, unavailable, JobIdParam } from '../schemas.js';
import type { Services } from '../services.js';
import type { AppEnv } from '../env.js';
import { jobView, JobView } from '../../common/view.js';

const IMMUTABLE = 'private, max-age=31536000, immutable';

const route = createRoute({
  method: 'get',
  path: '/api/results/{id}',
  operationId: 'getResult',
  tags: ['jobs'],
  summary: 'The result image (the access link)',
  request: {
    params: JobIdParam,
    headers: z.object({
      'if-none-match': z
        .string()
        .optional()
        .openapi({ description: 'An ETag from an earlier 200', example: '"9b2cf535f27731c974343645a3985328"' }),
    }),
  },
  responses: keyed({
    200: {
      description: 'The output image (cacheable forever, by the client only)',
      headers: {
        ETag: { schema: { type: 'string' } },
        'Cache-Control': { schema: { type: 'string', example: IMMUTABLE } },
      },
      content: { 'image/png': { schema: z.string().openapi({ type: 'string', format: 'binary' }) } },
    },
    202: {
      description: 'Still queued or running; retry after Retry-After seconds',
      headers: retryAfter(1),
      content: { 'application/json': { schema: JobView } },
    },
    304: { description: 'Not modified (If-None-Match matched)' },
    401: unauthorized,
    429: authFailures,
    404: errorResponse('No job has this id', { code: 'job_not_found', message: 'no job with id "x"' }),
    409: errorResponse('The job failed or was canceled; there will be no result', {
      code: 'job_failed',
      message: 'the job failed: the runner ran out of memory',
    }),
    410: errorResponse('The job expired: its retention ended and its input and output were deleted', {
      code: 'job_expired',
      message: 'the job expired: its retention ended and its result was deleted',
    }),
    503: unavailable('Object storage is unavailable', { code: 'storage_unavailable', message: 'object storage is unavailable; retry later' }),
  }),
});

const etagMatches = (header: string | undefined, etag: string) =>
  !!header && header.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag || tag.trim() === '*');

async function sendImage(c: Context<AppEnv>, services: Services, record: JobRecord, ifNoneMatch: string | undefined) {
  const object = await call('storage', (s) => services.store.open(record.output_key!, s), c.var.deadline());
  if (!object) throw new Error(`job ${record.id} succeeded but its output ${record.output_key} is missing`);
  const etag = object.etag ?? `"${record.id}"`;
  const headers = { ETag: etag, 'Cache-Control': IMMUTABLE };
  if (etagMatches(ifNoneMatch, etag)) {
    object.body.destroy();
    return c.body(null, 304, headers);
  }
  const length = object.length === undefined ? {} : { 'Content-Length': String(object.length) };
  return c.body(Readable.toWeb(object.body) as ReadableStream, 200, { ...headers, ...length, 'Content-Type': 'image/png' });
}

/** The endings without a result, as the 409 words them (its code is job_<status>). */
const NO_RESULT = { failed: 'failed', canceled: 'was canceled', aborted: 'was aborted' } as const;

function refuse(record: JobRecord & { status: keyof typeof NO_RESULT }): never {
  const reason = record.error ? `: ${record.error.message}` : '';
  throw new Conflict(`the job ${NO_RESULT[record.status]}${reason}`, { code: `job_${record.status}` });
}

export function resultRoutes(services: Services) {
  const { records } = services;
  return new OpenAPIHono<AppEnv>().openapi(route, async (c) => {
    const record = await loadJob(records, c.req.valid('param').id, c.var.deadline(), c.var.principal);
    if (record.status === 'succeeded' && record.output_key) return sendImage(c, services, record, c.req.valid('header')['if-none-match']);
    if (record.status === 'expired') throw new Gone(`the job expired: its retention ended and its result was deleted`, { code: 'job_expired' });
    if (record.status in NO_RESULT) refuse(record as JobRecord & { status: keyof typeof NO_RESULT });
    const view = jobView(record, c.var.baseUrl);
    return c.json(view, 202, { 'Retry-After': record.status === 'running' ? '1' : '2', 'Cache-Control': 'no-store' });
  });
}
