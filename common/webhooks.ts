// The shapes of signed webhooks: which job events a client may ask for, the delivery that waits
// in a retry topic, and the log of every attempt (jobs/<id>/webhooks.json) that
// GET /api/jobs/{id}/webhooks shows.
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { ENDINGS, type JobEvent } from './jobs.js';

export const WEBHOOK_EVENTS = ['started', 'progress', ...ENDINGS] as const;
export const WebhookEvent = z.enum(WEBHOOK_EVENTS);
export type WebhookEvent = z.infer<typeof WebhookEvent>;
/** What a submission that names no events gets: the endings. */
export const DEFAULT_WEBHOOK_EVENTS: WebhookEvent[] = [...ENDINGS];

export interface WebhookSettings {
  url: string;
  events: WebhookEvent[];
}

export const isWebhookEvent = (type: string): type is WebhookEvent => (WEBHOOK_EVENTS as readonly string[]).includes(type);

/**
 * The webhook-id of an event: the same for every attempt and for the same event published
 * twice (events are at least once), so receivers can use it as an idempotency key.
 */
export function deliveryId(event: Pick<JobEvent, 'id' | 'type' | 'at' | 'step'>): string {
  const digest = createHash('sha256').update(`${event.id}\n${event.type}\n${event.at}\n${event.step ?? ''}`).digest('base64url');
  return `msg_${digest.slice(0, 27)}`;
}

/** A delivery in flight: everything needed to try it again, so a retry topic can hold it alone. */
export const DeliveryMessage = z.object({
  v: z.literal(1),
  /** The webhook-id. */
  id: z.string(),
  job_id: z.string(),
  event: WebhookEvent,
  event_at: z.string(),
  tenant: z.string().nullable(),
  url: z.string(),
  /** The exact payload: every attempt sends the same bytes. */
  body: z.string(),
  /** Attempts made so far. */
  attempts: z.number().int().min(0),
  /** Not to be tried before this time. */
  due_at: z.string(),
});
export type DeliveryMessage = z.infer<typeof DeliveryMessage>;

export const Attempt = z.object({
  at: z.string(),
  /** The receiver's HTTP status; null when none came (refused address, timeout, connection error). */
  status_code: z.number().int().nullable(),
  error: z.string().nullable(),
  duration_ms: z.number().int(),
});
export type Attempt = z.infer<typeof Attempt>;

/** pending: will be tried again; succeeded: a 2xx; failed: given up; stopped: the receiver answered 410 Gone. */
export const DeliveryStatus = z.enum(['pending', 'succeeded', 'failed', 'stopped']);
export type DeliveryStatus = z.infer<typeof DeliveryStatus>;

export const Delivery = z.object({
  id: z.string(),
  event: WebhookEvent,
  event_at: z.string(),
  status: DeliveryStatus,
  attempts: z.array(Attempt),
  next_attempt_at: z.string().nullable(),
});
export type Delivery = z.infer<typeof Delivery>;

export const DeliveryLog = z.object({
  v: z.literal(1),
  job_id: z.string(),
  url: z.string(),
  /** When a receiver answered 410 Gone: no delivery for this job is sent after it. */
  stopped_at: z.string().nullable(),
  deliveries: z.array(Delivery),
});
export type DeliveryLog = z.infer<typeof DeliveryLog>;

