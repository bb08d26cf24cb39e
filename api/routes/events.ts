// GET /api/jobs/{id}/events: the job's lifecycle as Server-Sent Events.
// The subscription is registered before the record is read, so no event published between
// the read and the subscription is lost; the stream opens with a `snapshot` of the record.
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import type { Context } from 'hono';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import { isEnding, TERMINAL, type JobRecord } from '../../common/jobs.js';
import { endingOf } from '../../common/lifecycle.js';
import { formatPosition, isAfter, parsePosition, type Position, type Subscription } from '../hub.js';
import { loadJob } from '../lookup.js';
import { errorResponse, authFailures, keyed, unauthorized, unavailable, JobIdParam } from '../schemas.js';
import type { Services } from '../services.js';
import type { AppEnv } from '../env.js';
import { jobLinks, jobView, type JobStanding } from '../../common/view.js';

const EXAMPLE_STREAM = [
  'event: snapshot',
  'data: {"id":"q0vN3rJ8T6yWm1bXc2dEfA","status":"queued",...}',
  '',
  'event: queued',
  'data: {"v":1,"id":"q0vN3rJ8T6yWm1bXc2dEfA","type":"queued","at":"2025-01-01T12:00:00.500Z","model_name":"tiny","queue_position":0,"estimated_start_at":"2025-01-01T12:00:01.000Z","estimated_finish_at":"2025-01-01T12:00:02.600Z"}',
  '',
  'event: started',
  'id: 0-41',
  'data: {"v":1,"id":"q0vN3rJ8T6yWm1bXc2dEfA","type":"started","at":"2025-01-01T12:00:01.000Z","model_name":"tiny","attempt":1}',
  '',
  'event: progress',
  'id: 0-42',
  'data: {"v":1,"id":"q0vN3rJ8T6yWm1bXc2dEfA","type":"progress","at":"...","model_name":"tiny","step":1,"total":10}',
  '',
  'event: preview',
  'id: 0-47',
  'data: {"v":1,"id":"q0vN3rJ8T6yWm1bXc2dEfA","type":"preview","at":"...","model_name":"tiny","step":5,"total":10,"preview_url":"http://127.0.0.1:8000/api/jobs/q0vN3rJ8T6yWm1bXc2dEfA/preview"}',
  '',
  ': heartbeat',
  '',
  'event: succeeded',
  'id: 0-52',
  'data: {"v":1,"id":"q0vN3rJ8T6yWm1bXc2dEfA","type":"succeeded","at":"...","model_name":"tiny"}',
  '',
].join('\n');

const route = createRoute({
  method: 'get',
  path: '/api/jobs/{id}/events',
  operationId: 'followJobEvents',
  tags: ['jobs'],
  summary: 'Follow a job live (Server-Sent Events)',
  description:
    'Opens with `event: snapshot` (the job as GET /api/jobs/{id} returns it), then the live events: queued, started, ' +
    'progress, preview (a job submitted with preview_every: its data has preview_url, the latest preview while the job runs), ' +
    'cancel_requested, and one of succeeded, failed, canceled, aborted, after which the stream ends (also when the ' +
    'snapshot is already final). While the job is queued, `queued` events without an `id:` tell its new queue_position, ' +
    'estimated_start_at and estimated_finish_at (as GET /api/jobs/{id} gives them) at most once a second, whenever the position changed. ' +
    'Live events carry `id: <partition>-<offset>`; a client reconnecting with Last-Event-ID ' +
    'gets a fresh snapshot and then only newer events. A comment line is sent every 15 s to keep proxies from timing out. ' +
    'A client that reads too slowly is disconnected and should reconnect.',
  request: {
    params: JobIdParam,
    headers: z.object({
      'last-event-id': z
        .string()
        .optional()
        .openapi({ description: 'The last `id:` seen', example: '0-41' }),
    }),
  },
  responses: keyed({
    200: {
      description: 'An event stream',
      content: { 'text/event-stream': { schema: z.string().openapi({ example: EXAMPLE_STREAM }) } },
    },
    401: unauthorized,
    429: authFailures,
    404: errorResponse('No job has this id', { code: 'job_not_found', message: 'no job with id "x"' }),
    503: unavailable('Object storage is unavailable', { code: 'storage_unavailable', message: 'object storage is unavailable; retry later' }),
  }),
});

/** Relays the job's events; `leftQueue` is called before the first one that says it is no longer queued. */
async function relay(stream: SSEStreamingApi, subscription: Subscription, after: Position | undefined, leftQueue: () => void, base: string): Promise<void> {
  for await (const { event, position } of subscription) {
    if (!isAfter(position, after)) continue;
    if (event.type !== 'queued' && event.type !== 'cancel_requested') leftQueue();
    const id = position && formatPosition(position); // none for an ending read from the record
    // A preview event says where its image is: the job's preview_url, while it runs.
    const data = event.type === 'preview' ? { ...event, preview_url: `${jobLinks(base, event.id).status_url}/preview` } : event;
    await stream.writeSSE({ event: event.type, ...(id ? { id } : {}), data: JSON.stringify(data) });
    if (isEnding(event.type)) return;
  }
}

/** The stream's `queued` updates while the job waits: its standing, from the shared poll. */
function followStanding(stream: SSEStreamingApi, services: Services, record: JobRecord, standing: JobStanding): () => void {
  if (record.status !== 'queued') return () => {};
  return services.standings.watch(record, standing.queue_position, (next) => {
    const update = { v: 1, id: record.id, type: 'queued', at: new Date().toISOString(), model_name: record.model_name, ...next };
    void stream.writeSSE({ event: 'queued', data: JSON.stringify(update) }).catch(() => {});
  });
}

function open(c: Context<AppEnv>, services: Services, record: JobRecord, standing: JobStanding, subscription: Subscription, after: Position | undefined) {
  const view = jobView(record, c.var.baseUrl, standing);
  c.header('Cache-Control', 'no-store');
  c.header('X-Accel-Buffering', 'no'); // nginx: do not buffer the stream
  return streamSSE(
    c,
    async (stream) => {
      stream.onAbort(() => subscription.close());
      const heartbeat = setInterval(() => void stream.write(': heartbeat\n\n').catch(() => subscription.close()), services.config.SSE_HEARTBEAT_MS);
      let stopFollowing = () => {};
      try {
        await stream.writeSSE({ event: 'snapshot', data: JSON.stringify(view) });
        // A finished job's stream ends as a live one does: with its terminal event.
        const ending = endingOf(record);
        if (ending) await stream.writeSSE({ event: ending.type, data: JSON.stringify(ending) });
        else if (!TERMINAL.has(record.status)) {
          stopFollowing = followStanding(stream, services, record, standing);
          await relay(stream, subscription, after, () => stopFollowing(), c.var.baseUrl); // an expired job has nothing more to say
        }
      } finally {
        stopFollowing();
        clearInterval(heartbeat);
        subscription.close();
      }
    },
    async (error) => {
      services.log.warn({ err: error, job: record.id }, 'event stream failed');
    },
  );
}

export function eventRoutes(services: Services) {
  const { hub, records } = services;
  return new OpenAPIHono<AppEnv>().openapi(route, async (c) => {
    const { id } = c.req.valid('param');
    const subscription = hub.subscribe(id); // before the read: see the file comment
    try {
      const record = await loadJob(records, id, c.var.deadline(), c.var.principal);
      const standing = await services.queue.standing(record);
      return open(c, services, record, standing, subscription, parsePosition(c.req.valid('header')['last-event-id']));
    } catch (error) {
      subscription.close();
      throw error;
    }
  });
}
