// GET /api/jobs/{id}/webhooks: the job's webhook settings and every delivery attempt the
// dispatcher recorded (jobs/<id>/webhooks.json): status code, time, error, and what comes next.
import { createRoute, OpenAPIHono, z } from '@hono/zod-openapi';
import { DeliveryLogStore } from '../../common/deliveries.js';
import { isWebhookEvent, WEBHOOK_EVENTS } from '../../common/webhooks.js';
import { call } from '../dependency.js';
import { loadJob } from '../lookup.js';
import { errorResponse, JobIdParam, authFailures, keyed, unauthorized, unavailable } from '../schemas.js';
import type { Services } from '../services.js';
import type { AppEnv } from '../env.js';

const EXAMPLE_AT = '2025-01-01T12:00:05.000Z';
const Event = z.enum(WEBHOOK_EVENTS);

const AttemptView = z.object({
  at: z.string().openapi({ example: EXAMPLE_AT }),
  status_code: z.number().int().nullable().openapi({ example: 500, description: 'The receiver’s status; null when none came' }),
  error: z.string().nullable().openapi({ example: 'HTTP 500' }),
  duration_ms: z.number().int().openapi({ example: 35 }),
});

const DeliveryView = z.object({
  id: z.string().openapi({ example: 'msg_2KWPBgLlAfxdpx2AI54pPJ85f4W', description: 'The webhook-id header: the same on every attempt' }),
  event: Event.openapi({ example: 'succeeded' }),
  event_at: z.string().openapi({ example: '2025-01-01T12:00:00.000Z' }),
  status: z.enum(['pending', 'succeeded', 'failed', 'stopped']).openapi({
    example: 'pending',
    description: 'pending: will be tried again at next_attempt_at; succeeded: a 2xx; failed: given up; stopped: the receiver answered 410 Gone',
  }),
  attempts: z.array(AttemptView),
  next_attempt_at: z.string().nullable().openapi({ example: '2025-01-01T12:00:25.000Z' }),
});

export const WebhookDeliveries = z
  .object({
    job_id: z.string().openapi({ example: 'q0vN3rJ8T6yWm1bXc2dEfA' }),
    webhook: z
      .object({ url: z.string().openapi({ example: 'https://example.com/hooks/img2img' }), events: z.array(Event) })
      .nullable()
      .openapi({ description: 'null: the job has no webhook' }),
    stopped_at: z.string().nullable().openapi({ description: 'When a receiver answered 410 Gone: nothing more is sent for this job', example: null }),
    deliveries: z.array(DeliveryView),
  })
  .openapi('WebhookDeliveries');

const route = createRoute({
  method: 'get',
  path: '/api/jobs/{id}/webhooks',
  operationId: 'listJobWebhookDeliveries',
  tags: ['jobs'],
  summary: 'The job’s webhook deliveries and each attempt',
  request: { params: JobIdParam },
  responses: keyed({
    200: { description: 'The deliveries, oldest first', content: { 'application/json': { schema: WebhookDeliveries } } },
    401: unauthorized,
    429: authFailures,
    404: errorResponse('No job has this id', { code: 'job_not_found', message: 'no job with id "x"' }),
    503: unavailable('Object storage is unavailable', { code: 'storage_unavailable', message: 'object storage is unavailable; retry later' }),
  }),
});

export function webhookRoutes(services: Services) {
  const { records, store } = services;
  const deliveries = new DeliveryLogStore(store);
  return new OpenAPIHono<AppEnv>().openapi(route, async (c) => {
    const record = await loadJob(records, c.req.valid('param').id, c.var.deadline(), c.var.principal);
    const log = await call('storage', (signal) => deliveries.get(record.id, signal), c.var.deadline());
    const webhook = record.webhook && { url: record.webhook.url, events: record.webhook.events.filter(isWebhookEvent) };
    return c.json({ job_id: record.id, webhook, stopped_at: log?.stopped_at ?? null, deliveries: log?.deliveries ?? [] }, 200);
  });
}
