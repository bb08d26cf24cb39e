// GET /api/jobs: the caller's own jobs, newest first, a page at a time (common/joblist.ts keeps
// the index). A tenant's key lists its tenant's jobs; an admin key lists every tenant's (from the
// list of everyone's jobs: one listing a page, however many tenants), or one.
// Without keys nobody owns a job, and a list would hand out every job's id: it is refused.
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { ALL_TENANTS, CURSOR, endedList, listEntries, tenantList } from '../../common/joblist.js';
import { isEnding, JobStatus, type JobRecord } from '../../common/jobs.js';
import { TENANT } from '../../common/keys.js';
import { JobView, jobView } from '../../common/view.js';
import { seesAll } from '../auth.js';
import { call } from '../dependency.js';
import type { AppEnv } from '../env.js';
import { Forbidden, ValidationError } from '../errors.js';
import { authFailures, errorResponse, keyed, unauthorized, unavailable } from '../schemas.js';
import type { Services } from '../services.js';

const MAX_LIMIT = 100;
/**
 * Index entries one request reads at most, and for how long it goes on reading pages: a filter
 * that matches few jobs answers a shorter page and a cursor rather than a slow one.
 */
const MAX_SCAN = 1000;
const SCAN_BUDGET_MS = 1000;
/** Records read at once at least, when a filtered page lacks only a few jobs. */
const MIN_READS = 10;

const query = z.object({
  limit: z
    .string()
    .regex(/^(100|[1-9][0-9]?)$/, `must be 1 to ${MAX_LIMIT}`)
    .optional()
    .openapi({ description: `Jobs a page, 1 to ${MAX_LIMIT}. Default 50`, pattern: '^(100|[1-9][0-9]?)$', example: '50' }),
  cursor: z
    .string()
    .regex(CURSOR, 'must be the next_cursor of an earlier page')
    .optional()
    .openapi({ description: 'Where to continue: the next_cursor of the previous page', pattern: CURSOR.source }),
  status: JobStatus.optional().openapi({ description: 'Only jobs in this status (as of the answer)' }),
  model: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'must be a model name').optional().openapi({ description: 'Only jobs of this model' }),
  tenant: z.string().regex(TENANT, 'must be a tenant name').optional().openapi({ description: 'Admin keys only: one tenant’s jobs instead of every tenant’s' }),
});

const JobList = z
  .object({
    jobs: z.array(JobView),
    next_cursor: z.string().nullable().openapi({ description: 'Pass as cursor for the next page; null at the end of the list', example: null }),
  })
  .openapi('JobList');

const route = createRoute({
  method: 'get',
  path: '/api/jobs',
  operationId: 'listJobs',
  tags: ['jobs'],
  summary: 'The caller’s jobs, newest first',
  description:
    'A tenant’s key lists its tenant’s jobs; an admin key every tenant’s (or one, with tenant). Newest first, a page at a time: ' +
    'pass next_cursor as cursor for the next one. Filters by status and model; a filtered page may hold fewer jobs than limit ' +
    `(at most ${MAX_SCAN} jobs, for about a second, are looked at a request) and still give a cursor. Expired jobs leave the list. Needs API keys.`,
  request: { query },
  responses: keyed({
    200: { description: 'A page of jobs', content: { 'application/json': { schema: JobList } } },
    400: errorResponse('A query parameter is invalid', { code: 'validation_error', message: 'limit: must be 1 to 100', field: 'limit' }),
    401: unauthorized,
    403: errorResponse('The API runs without keys (nobody owns a job), or a tenant’s key asks for another tenant', {
      code: 'keys_required',
      message: 'listing jobs needs API keys: without them a job belongs to no one',
    }),
    429: authFailures,
    503: unavailable('Object storage is unavailable', { code: 'storage_unavailable', message: 'object storage is unavailable; retry later' }),
  }),
});

export function jobListRoutes(services: Services) {
  const { store, records } = services;

  /** Whose list the caller reads: its tenant's, or for an admin the one asked for or everyone's. */
  function listOwner(principal: AppEnv['Variables']['principal'], tenant: string | undefined): string {
    if (!principal) throw new Forbidden('listing jobs needs API keys: without them a job belongs to no one', { code: 'keys_required' });
    if (!seesAll(principal)) {
      if (tenant !== undefined && tenant !== principal.tenant) throw new ValidationError('tenant', 'tenant: only an admin key lists another tenant’s jobs');
      return principal.tenant;
    }
    return tenant ?? ALL_TENANTS;
  }

  return new OpenAPIHono<AppEnv>().openapi(route, async (c) => {
    const { limit: limitText, cursor, status, model, tenant } = c.req.valid('query');
    const limit = Number(limitText ?? 50);
    const deadline = c.var.deadline();
    const owner = listOwner(c.var.principal, tenant);
    // An ending has a list of its own: the jobs that ended so, without the others between them.
    const endingList = status !== undefined && isEnding(status);
    const list = endingList ? endedList(owner, status) : tenantList(owner);
    // A filter that the list itself does not answer reads more entries a round.
    const filtered = model !== undefined || (status !== undefined && !endingList);
    const found: JobRecord[] = [];
    let scanned = 0;
    let from = cursor;
    let ended = false;
    const started = Date.now();
    // Pages of the index until the page of jobs is full, the list ends, or MAX_SCAN entries or SCAN_BUDGET_MS went by.
    while (found.length < limit && scanned < MAX_SCAN && (scanned === 0 || Date.now() - started < SCAN_BUDGET_MS)) {
      const want = filtered ? Math.min(200, MAX_SCAN - scanned) : limit - found.length;
      const page = await call('storage', (s) => listEntries(store, list, want, from, s), deadline);
      let taken = 0;
      // The records of as many entries as the page still lacks jobs (at least MIN_READS), read at
      // once, until it is full: a filter that most jobs pass reads few records past the page's end.
      while (taken < page.entries.length && found.length < limit) {
        const batch = page.entries.slice(taken, taken + Math.max(limit - found.length, MIN_READS));
        const matching = batch.filter((entry) => !model || entry.model === model);
        const read = await call('storage', (s) => Promise.all(matching.map(async (entry) => [entry.id, await records.get(entry.id, s)] as const)), deadline);
        const recordOf = new Map(read);
        for (const entry of batch) {
          if (found.length === limit) break;
          taken++;
          from = entry.cursor;
          const record = recordOf.get(entry.id);
          // An entry without a record: an intake that failed after writing it.
          if (record && record.status !== 'expired' && (!status || record.status === status)) found.push(record);
        }
      }
      scanned += taken;
      if (taken === page.entries.length && !page.more) {
        ended = true;
        break;
      }
    }
    const jobs = found.map((record) => jobView(record, c.var.baseUrl));
    return c.json({ jobs, next_cursor: ended ? null : (from ?? null) }, 200);
  });
}

