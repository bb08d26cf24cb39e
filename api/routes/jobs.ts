// GET /api/jobs/{id}: the job's state. DELETE /api/jobs/{id}: cancel it.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { JobEvent, JobRecord } from '../../common/jobs.js';
import { call } from '../dependency.js';
import { Conflict } from '../errors.js';
import { checkJobId, jobNotFound, loadJob } from '../lookup.js';
import { errorResponse, JobIdParam, JobView } from '../schemas.js';
import type { Services } from '../services.js';
import { baseUrl, jobView } from '../view.js';

const notFound = errorResponse('No job has this id (also for a malformed id)', {
  code: 'job_not_found',
  message: 'no job with id "q0vN3rJ8T6yWm1bXc2dEfA"',
});
const unavailable = errorResponse('Object storage or Kafka is unavailable', {
  code: 'storage_unavailable',
  message: 'object storage is unavailable; retry later',
});
const jobJson = (description: string) => ({ description, content: { 'application/json': { schema: JobView } } });

const getJob = createRoute({
  method: 'get',
  path: '/api/jobs/{id}',
  tags: ['jobs'],
  summary: 'A job’s status, parameters, progress and timings',
  request: { params: JobIdParam },
  responses: { 200: jobJson('The job'), 404: notFound, 503: unavailable },
});

const cancelJob = createRoute({
  method: 'delete',
  path: '/api/jobs/{id}',
  tags: ['jobs'],
  summary: 'Cancel a job',
  description:
    'A queued job is canceled at once (200). A running job gets cancel_requested=true and its consumer stops it at the ' +
    'next denoising step (202; follow events_url). Canceling a canceled job again answers 200; a succeeded or failed job, 409.',
  request: { params: JobIdParam },
  responses: {
    200: jobJson('Canceled (or was already)'),
    202: jobJson('Cancellation requested; the running job stops at its next step'),
    404: notFound,
    409: errorResponse('The job already finished', { code: 'job_finished', message: 'the job already succeeded' }),
    503: unavailable,
  },
});

type Outcome = 'canceled' | 'requested' | 'already_canceled' | 'finished';

/** Compare-and-swap on the record, so a consumer's concurrent write is never overwritten. */
async function requestCancel(services: Services, id: string): Promise<{ outcome: Outcome; record: JobRecord }> {
  checkJobId(id);
  let outcome: Outcome = 'finished';
  const change = (record: JobRecord): JobRecord | undefined => {
    if (record.status === 'queued') {
      outcome = 'canceled';
      return { ...record, status: 'canceled', finished_at: new Date().toISOString(), progress: null };
    }
    if (record.status === 'running') {
      outcome = 'requested';
      return record.cancel_requested ? undefined : { ...record, cancel_requested: true };
    }
    outcome = record.status === 'canceled' ? 'already_canceled' : 'finished';
    return undefined;
  };
  const signal = AbortSignal.timeout(services.config.DEPENDENCY_TIMEOUT_MS);
  const record = await call('storage', (s) => services.records.update(id, change, s), signal);
  if (!record) throw jobNotFound(id);
  return { outcome, record };
}

/**
 * The consumer stops a running job when it sees cancel_requested, so that event must be out
 * before we answer (a retry re-sends it); the canceled event of a queued job is informational.
 */
async function announce(services: Services, record: JobRecord, outcome: Outcome): Promise<void> {
  if (outcome !== 'canceled' && outcome !== 'requested') return;
  const type = outcome === 'canceled' ? 'canceled' : 'cancel_requested';
  const event: JobEvent = { v: 1, id: record.id, type, at: new Date().toISOString(), model_name: record.model_name };
  const signal = AbortSignal.timeout(services.config.DEPENDENCY_TIMEOUT_MS);
  const sending = call('kafka', (s) => services.publisher.publishEvent(event, s), signal);
  if (type === 'cancel_requested') return sending;
  sending.catch((error: unknown) => services.log.warn({ job: record.id, err: error }, 'could not publish the canceled event'));
}

export function jobRoutes(services: Services) {
  const { config, records } = services;
  return new OpenAPIHono()
    .openapi(getJob, async (c) => {
      const record = await loadJob(records, c.req.valid('param').id, config.DEPENDENCY_TIMEOUT_MS);
      return c.json(jobView(record, baseUrl(config.PUBLIC_BASE_URL, c.req.url)), 200);
    })
    .openapi(cancelJob, async (c) => {
      const { outcome, record } = await requestCancel(services, c.req.valid('param').id);
      if (outcome === 'finished') throw new Conflict(`the job already ${record.status}`, { code: 'job_finished' });
      await announce(services, record, outcome);
      const view = jobView(record, baseUrl(config.PUBLIC_BASE_URL, c.req.url));
      return outcome === 'requested' ? c.json(view, 202) : c.json(view, 200);
    });
}
