// The webhook fields of a submission: where the job's signed events go (webhook_url) and which
// ones (webhook_events). The URL is checked here as far as it can be without resolving a name
// (scheme, credentials, an address written in it); the dispatcher checks every resolved address
// again when it connects.
import { z } from '@hono/zod-openapi';
import { urlProblem } from '../common/addresses.js';
import type { EventType } from '../common/jobs.js';
import { DEFAULT_WEBHOOK_EVENTS, isWebhookEvent, WEBHOOK_EVENTS, type WebhookEvent, type WebhookSettings } from '../common/webhooks.js';
import { ValidationError } from './errors.js';

export const MAX_WEBHOOK_URL = 2048;
const EVENT = `(?:${WEBHOOK_EVENTS.join('|')})`;
/** Comma-separated event names, spaces allowed around them. */
const EVENTS_PATTERN = `^ *${EVENT} *(?:, *${EVENT} *)*$`;

/** The two fields, for submissionFields: each may come as a query parameter or a multipart field. */
export function webhookFields() {
  return {
    webhook_url: z
      .string({ error: 'must be given once, as text' })
      .max(MAX_WEBHOOK_URL, `must be at most ${MAX_WEBHOOK_URL} characters`)
      .regex(/^https?:\/\//i, 'must be an http:// or https:// URL')
      .optional()
      .openapi({
        description:
          'Where to POST this job’s events as signed webhooks (Standard Webhooks). http or https; the address must be public ' +
          '(no loopback, private, link-local, CGNAT or metadata address) unless the deployment allows private ones. ' +
          'For example https://example.com/hooks/img2img (no example value: Swagger UI would fill it in and send a real webhook)',
        pattern: '^[Hh][Tt][Tt][Pp][Ss]?://',
        maxLength: MAX_WEBHOOK_URL,
      }),
    webhook_events: z
      .string({ error: 'must be given once, as text' })
      .regex(new RegExp(EVENTS_PATTERN), `must be a comma-separated list of ${WEBHOOK_EVENTS.join(', ')}`)
      .optional()
      .openapi({
        description: `Which events to deliver, comma-separated: ${WEBHOOK_EVENTS.join(', ')}. Default ${DEFAULT_WEBHOOK_EVENTS.join(',')}. Needs webhook_url (or a key with a default one)`,
        pattern: EVENTS_PATTERN,
      }),
  };
}

export interface WebhookFields {
  webhook_url?: string | undefined;
  webhook_events?: string | undefined;
}

export interface WebhookOptions {
  /** WEBHOOK_ALLOW_PRIVATE: loopback and private addresses are allowed (tests, in-cluster receivers). */
  allowPrivate: boolean;
  /** The submitting key's default, used when the submission names no URL. */
  fallback?: { url: string; events: readonly (EventType | WebhookEvent)[] } | null | undefined;
}

const parseEvents = (text: string): WebhookEvent[] => [...new Set(text.split(',').map((name) => name.trim()).filter(isWebhookEvent))];

/** The webhook of a submission, from its fields or the key's default; null when none. */
export function webhookOf(fields: WebhookFields, { allowPrivate, fallback }: WebhookOptions): WebhookSettings | null {
  const url = fields.webhook_url ?? fallback?.url;
  if (url === undefined) {
    if (fields.webhook_events !== undefined) throw new ValidationError('webhook_events', 'webhook_events: needs webhook_url');
    return null;
  }
  const problem = urlProblem(url, allowPrivate);
  if (problem) throw new ValidationError('webhook_url', `webhook_url: ${problem}`);
  // Events as sent; else the key's, when its URL is the one used; else the endings.
  const events =
    fields.webhook_events !== undefined
      ? parseEvents(fields.webhook_events)
      : fields.webhook_url === undefined
        ? (fallback?.events ?? []).filter(isWebhookEvent)
        : [];
  return { url, events: events.length ? events : DEFAULT_WEBHOOK_EVENTS };
}
