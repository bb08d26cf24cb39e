// GET /api/jobs/{id}: the job's state. DELETE /api/jobs/{id}: cancel it.
import { createRoute, OpenAPIHono } from '@hono/zod-openapi';
import type { JobRecord } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';
import { publishOutbox } from '../../common/outbox.js';
import type { Applied } from '../../common/records.js';
import { call } from '../dependency.js';
import { Conflict, Gone } from '../errors.js';
import type { ApiKey } from '../../common/keys.js';
import { jobNotFound, loadJob } from '../lookup.js';
import { errorResponse, JobIdParam, authFailures, keyed, unauthorized, unavailable } from '../schemas.js';
import type { Services } from '../services.js';
import type { AppEnv } from '../env.js';
import { jobView, JobView } from '../../common/view.js';

const notFound = errorResponse('No job has this id (also for a malformed id)', {
  code: 'job_not_found',
  message: 'no job with id "q0vN3rJ8T6yWm1bXc2dEfA"',
});
const dependencyDown = unavailable('Object storage or Kafka is unavailable', {
  code: 'storage_unavailable',
  message: 'object storage is unavailable; retry later',
});
const jobJson = (description: string) => ({ description, content: { 'application/json': { schema: JobView } } });

const getJob = createRoute({
  method: 'get',
  path: '/api/jobs/{id}',
  operationId: 'getJob',
  tags: ['jobs'],
  summary: 'A job’s status, parameters, progress and timings',
  request: { params: JobIdParam },
  responses: keyed({ 200: jobJson('The job'), 401: unauthorized, 429: authFailures, 404: notFound, 503: dependencyDown }),
});

const cancelJob = createRoute({
  method: 'delete',
  path: '/api/jobs/{id}',
  operationId: 'cancelJob',
  tags: ['jobs'],
  summary: 'Cancel a job',
  description:
    'A queued job is canceled at once (200). A running job gets cancel_requested=true and its consumer stops it at the ' +
    'next denoising step (202; follow events_url). Canceling a canceled job again answers 200; a succeeded or failed job, 409; an expired one, 410.',
  request: { params: JobIdParam },
  responses: keyed({
    200: jobJson('Canceled (or was already)'),
    202: jobJson('Cancellation requested; the running job stops at its next step'),
    401: unauthorized,
    429: authFailures,
    404: notFound,
    409: errorResponse('The job already finished', { code: 'job_finished', message: 'the job already succeeded' }),
    410: errorResponse('The job expired: its retention ended', { code: 'job_expired', message: 'the job expired: its retention ended' }),
    503: dependencyDown,
  }),
});

type Outcome = 'canceled' | 'requested' | 'already_canceled' | 'finished';

/** Compare-and-swap on the record, so a consumer's concurrent write is never overwritten. */
async function requestCancel(services: Services, id: string, deadline: AbortSignal, principal: ApiKey | undefined): Promise<{ outcome: Outcome; applied: Applied }> {
  await loadJob(services.records, id, deadline, principal); // another tenant's job is not found, and left alone
  const applied = await call('storage', (s) => services.records.apply(id, (record) => lifecycle.cancelOrRequest(record), s), deadline);
  const { record, event } = applied;
  if (!record) throw jobNotFound(id);
  if (record.status === 'running') return { outcome: 'requested', applied };
  if (record.status === 'canceled') return { outcome: event ? 'canceled' : 'already_canceled', applied };
  return { outcome: 'finished', applied };
}

/**
 * The consumer stops a running job when its cancel request arrives, so that request must be out
 * before we answer (a retry of the DELETE sends it again); the events are informational. A job
 * canceled while queued gets one too: its runner may hold it, waiting behind a batch.
 */
async function announce(services: Services, { record, event }: Applied, outcome: Outcome, deadline: AbortSignal): Promise<void> {
  const { publisher, log } = services;
  const warn = (error: unknown) => log.warn({ job: record!.id, err: error }, 'could not publish a cancel event');
  // A canceled event waits in the record's outbox until sent; a consumer that meets the job sends it otherwise.
  if (event && outcome === 'canceled') void publishOutbox(services, record, deadline).catch(warn);
  else if (event) void call('kafka', (s) => publisher.publishEvent(event, s, record!.webhook !== null), deadline).catch(warn);
  if (outcome !== 'requested' && outcome !== 'canceled') return;
  const request = { v: 1 as const, id: record!.id, model_name: record!.model_name, at: new Date().toISOString() };
  await call('kafka', (s) => publisher.publishCancel(request, s), deadline);
}

/**
 * A queued job past its start deadline ends aborted when it is read, not only when a consumer
 * reaches it (a long queue would show it queued past its deadline); its event goes out as a
 * cancel's does, through the outbox.
 */
async function abortLate(services: Services, record: JobRecord, deadline: AbortSignal): Promise<JobRecord> {
  const applied = await call('storage', (s) => services.records.apply(record.id, (current) => lifecycle.abortIfLate(current), s), deadline);
  if (!applied.record) return record;
  if (applied.event) {
    const warn = (error: unknown) => services.log.warn({ job: record.id, err: error }, 'could not publish an aborted event');
    void publishOutbox(services, applied.record, deadline).catch(warn);
  }
  return applied.record;
}

export function jobRoutes(services: Services) {
  const { records } = services;
  return new OpenAPIHono<AppEnv>()
    .openapi(getJob, async (c) => {
      const found = await loadJob(records, c.req.valid('param').id, c.var.deadline(), c.var.principal);
      const record = lifecycle.abortIfLate(found) ? await abortLate(services, found, c.var.deadline()) : found;
      return c.json(jobView(record, c.var.baseUrl, await services.queue.standing(record)), 200);
    })
    .openapi(cancelJob, async (c) => {
      const { outcome, applied } = await requestCancel(services, c.req.valid('param').id, c.var.deadline(), c.var.principal);
      const record = applied.record!;
      if (record.status === 'expired') throw new Gone('the job expired: its retention ended', { code: 'job_expired' });
      if (outcome === 'finished') throw new Conflict(`the job already ${record.status}`, { code: 'job_finished' });
      await announce(services, applied, outcome, c.var.deadline());
      const view = jobView(record, c.var.baseUrl);
      return outcome === 'requested' ? c.json(view, 202) : c.json(view, 200);
    });
}
