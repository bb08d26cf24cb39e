// One webhook delivery at a time: which event asks for one, and one attempt at it. Kafka stays
// outside (dispatcher.ts): an attempt is recorded in the job's delivery log and answers the retry
// to schedule, if any, so what happens to a delivery never lives only in this process' memory.
import { jobView } from '../common/view.js';
import type { DeliveryLogStore } from '../common/deliveries.js';
import type { JobEvent } from '../common/jobs.js';
import type { Logger } from '../common/logger.js';
import type { RecordStore } from '../common/records.js';
import type { TenantStore } from '../common/tenants.js';
import { WEBHOOK_RETRY_LEVELS } from '../common/topics.js';
import { deliveryId, isWebhookEvent, type Attempt, type DeliveryLog, type DeliveryMessage, type DeliveryStatus } from '../common/webhooks.js';
import { DeliveryError, type WebhookClient } from './client.js';
import type { DeliveryMetrics } from './metrics.js';
import { webhookHeaders } from './signature.js';

/** Progress deliveries of one job are at least this far apart (by the events' own times). */
const PROGRESS_INTERVAL_MS = 1000;
/** Each retry waits this many times longer than the one before. */
const BACKOFF_FACTOR = 4;
/** A Retry-After longer than this is not honoured as such. */
const MAX_RETRY_AFTER_MS = 86_400_000;
/** Jobs remembered as having no webhook (the most recent ones): their later events need no read of the record. */
const REMEMBERED_WITHOUT_WEBHOOK = 10_000;

export interface CourierDeps {
  records: RecordStore;
  deliveries: DeliveryLogStore;
  tenants: TenantStore;
  client: WebhookClient;
  /** Origin of the links in webhook bodies. */
  baseUrl: string;
  retryBaseMs: number;
  logger: Logger;
  /** For the jitter; tests may fix it. */
  random?: () => number;
  metrics?: DeliveryMetrics;
}

interface Outcome {
  status_code: number | null;
  error: string | null;
  retryable: boolean;
  retryAfterS?: number | undefined;
}

/** The wait before attempt `attempts + 1`: exponential, with ±25 % jitter so failed receivers are not hit in waves. */
export function retryDelayMs(attempts: number, baseMs: number, random: () => number = Math.random): number {
  return Math.round(baseMs * BACKOFF_FACTOR ** (attempts - 1) * (0.75 + 0.5 * random()));
}

export class Courier {
  /** Jobs whose record names no webhook, oldest first. A webhook is set at submission only, so one read decides for all of a job's events. */
  private readonly withoutWebhook = new Set<string>();

  constructor(private readonly deps: CourierDeps) {}

  /** The delivery `event` asks for; undefined when none: no webhook, an event not chosen, throttled, done already. */
  async fromEvent(event: JobEvent, now = new Date()): Promise<DeliveryMessage | undefined> {
    if (!isWebhookEvent(event.type) || this.withoutWebhook.has(event.id)) return undefined;
    const type = event.type;
    const record = await this.deps.records.get(event.id);
    const webhook = record?.webhook;
    if (record && !webhook) this.rememberWithoutWebhook(record.id);
    if (!record || !webhook || !webhook.events.includes(type)) return undefined;
    const id = deliveryId(event);
    const log = await this.deps.deliveries.get(record.id);
    if (log?.stopped_at) return undefined;
    const existing = log?.deliveries.find((delivery) => delivery.id === id);
    // A pending one is tried again: the event came back because its first try may not have
    // scheduled a retry before this process died.
    if (existing && existing.status !== 'pending') return undefined;
    if (!existing && type === 'progress' && log && throttled(log, event)) return undefined;
    const body = JSON.stringify({ type: `job.${type}`, timestamp: event.at, data: jobView(record, this.deps.baseUrl) });
    return {
      v: 1,
      id,
      job_id: record.id,
      event: type,
      event_at: event.at,
      tenant: record.tenant,
      url: webhook.url,
      body,
      attempts: existing?.attempts.length ?? 0,
      due_at: now.toISOString(),
    };
  }

  private rememberWithoutWebhook(id: string): void {
    this.withoutWebhook.add(id);
    if (this.withoutWebhook.size > REMEMBERED_WITHOUT_WEBHOOK) this.withoutWebhook.delete(this.withoutWebhook.values().next().value!);
  }

  /** Sends `delivery` once and records the attempt; answers the retry to schedule, if any. */
  async attempt(delivery: DeliveryMessage): Promise<DeliveryMessage | undefined> {
    const log = await this.deps.deliveries.get(delivery.job_id);
    const known = log?.deliveries.find((entry) => entry.id === delivery.id);
    // Done already (a duplicate of the event or of a retry), or the receiver said 410 Gone.
    if (log?.stopped_at || (known && known.status !== 'pending')) return undefined;
    const started = Date.now();
    const outcome = await this.send(delivery);
    const attempts = delivery.attempts + 1;
    const status = statusAfter(outcome, attempts);
    const wait = Math.max(retryDelayMs(attempts, this.deps.retryBaseMs, this.deps.random), Math.min((outcome.retryAfterS ?? 0) * 1000, MAX_RETRY_AFTER_MS));
    const next = status === 'pending' ? new Date(Date.now() + wait).toISOString() : null;
    const attempt: Attempt = { at: new Date(started).toISOString(), status_code: outcome.status_code, error: outcome.error, duration_ms: Date.now() - started };
    await this.deps.deliveries.update(delivery.job_id, delivery.url, (current) => withAttempt(current, delivery, attempt, status, next));
    this.deps.metrics?.attempted(delivery.event, delivery.event_at, status, attempt.duration_ms / 1000);
    const line = { job: delivery.job_id, webhook_id: delivery.id, event: delivery.event, attempt: attempts, status_code: outcome.status_code, error: outcome.error, status };
    if (status === 'succeeded') this.deps.logger.debug(line, 'webhook delivered');
    else this.deps.logger.info({ ...line, next_attempt_at: next }, 'webhook attempt failed');
    return next ? { ...delivery, attempts, due_at: next } : undefined;
  }

  private async send(delivery: DeliveryMessage): Promise<Outcome> {
    // Read at every attempt, so a rotation applies to the next one.
    const secrets = await this.deps.tenants.webhookSecrets(delivery.tenant);
    const headers = webhookHeaders(secrets, delivery.id, delivery.body);
    try {
      const answer = await this.deps.client.post(delivery.url, delivery.body, headers);
      const ok = answer.status >= 200 && answer.status < 300;
      const error = ok ? null : answer.status >= 300 && answer.status < 400 ? `HTTP ${answer.status}: redirects are not followed` : `HTTP ${answer.status}`;
      return { status_code: answer.status, error, retryable: true, retryAfterS: answer.retryAfterS };
    } catch (error) {
      if (!(error instanceof DeliveryError)) throw error;
      return { status_code: null, error: error.message, retryable: error.retryable };
    }
  }
}

function statusAfter(outcome: Outcome, attempts: number): DeliveryStatus {
  const code = outcome.status_code;
  if (code !== null && code >= 200 && code < 300) return 'succeeded';
  if (code === 410) return 'stopped';
  // The first attempt is not a retry: WEBHOOK_RETRY_LEVELS retries follow it.
  if (!outcome.retryable || attempts > WEBHOOK_RETRY_LEVELS) return 'failed';
  return 'pending';
}

/** A progress event less than a second after the last progress delivery of its job. */
function throttled(log: DeliveryLog, event: JobEvent): boolean {
  const last = Math.max(...log.deliveries.filter((d) => d.event === 'progress').map((d) => Date.parse(d.event_at)));
  return Date.parse(event.at) - last < PROGRESS_INTERVAL_MS;
}

function withAttempt(log: DeliveryLog, delivery: DeliveryMessage, attempt: Attempt, status: DeliveryStatus, next: string | null): DeliveryLog {
  const existing = log.deliveries.find((entry) => entry.id === delivery.id);
  const entry = existing ?? { id: delivery.id, event: delivery.event, event_at: delivery.event_at, status, attempts: [], next_attempt_at: null };
  const updated = { ...entry, status, attempts: [...entry.attempts, attempt], next_attempt_at: next };
  const deliveries = existing ? log.deliveries.map((d) => (d === existing ? updated : d)) : [...log.deliveries, updated];
  if (status !== 'stopped') return { ...log, deliveries };
  // 410 Gone: the receiver wants nothing more about this job; what still waits is dropped.
  const stopped_at = attempt.at;
  return {
    ...log,
    stopped_at,
    deliveries: deliveries.map((d) => (d.status === 'pending' ? { ...d, status: 'stopped' as const, next_attempt_at: null } : d)),
  };
}
