// The webhook dispatcher's Prometheus metrics (served on DISPATCHER_METRICS_PORT): every attempt
// by event and by what it left the delivery as, how long attempts take, how long after its event
// a delivery arrived (retries included: the figure a receiver feels), the retries scheduled on
// each retry topic, and the deliveries waiting in those topics.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { SECONDS_BUCKETS } from '../common/metrics.js';
import { DeliveryStatus, WEBHOOK_EVENTS } from '../common/webhooks.js';

/** SECONDS_BUCKETS, then the retry schedule's scale: an hour to the 30 h of the last retry. */
const LAG_BUCKETS = [...SECONDS_BUCKETS, 1800, 3600, 6 * 3600, 24 * 3600, 36 * 3600];

export interface DeliveryMetrics {
  /** One attempt at a delivery of `event` (which happened at eventAt), and the status it left the delivery in. */
  attempted(event: string, eventAt: string, status: DeliveryStatus, seconds: number): void;
}

export interface DispatcherMetrics extends DeliveryMetrics {
  /** A retry was scheduled on `topic`. */
  retried(topic: string): void;
}

/** Deliveries waiting in each retry topic: the dispatcher group's lag there. */
export type BacklogSource = () => Promise<Map<string, number>>;

export function dispatcherMetrics(registry: Registry, backlog: BacklogSource, retryTopics: readonly string[] = []): DispatcherMetrics {
  const registers = [registry];
  const attempts = new Counter({
    name: 'img2img_webhook_attempts_total',
    help: 'Webhook delivery attempts, by event and by the delivery status after the attempt: succeeded, pending (a retry is scheduled), failed (retries spent or not retryable), stopped (the receiver answered 410)',
    labelNames: ['event', 'status'],
    registers,
  });
  const attemptSeconds = new Histogram({
    name: 'img2img_webhook_attempt_seconds',
    help: 'Duration of one delivery attempt: resolve, connect, send, answer',
    buckets: SECONDS_BUCKETS,
    registers,
  });
  const lag = new Histogram({
    name: 'img2img_webhook_delivery_lag_seconds',
    help: 'From an event to its successful delivery, retries included',
    labelNames: ['event'],
    buckets: LAG_BUCKETS,
    registers,
  });
  const retries = new Counter({
    name: 'img2img_webhook_retries_total',
    help: 'Retries scheduled, by the retry topic they wait in (level n: the n-th retry of a delivery)',
    labelNames: ['topic'],
    registers,
  });
  new Gauge({
    name: 'img2img_webhook_retry_backlog',
    help: 'Deliveries waiting for a retry, by retry topic (the webhooks consumer group lag there)',
    labelNames: ['topic'],
    registers,
    async collect() {
      const waiting = await backlog().catch(() => undefined);
      for (const [topic, value] of waiting ?? []) this.set({ topic }, value);
    },
  });
  // Every series an alert reads exists from the start at 0: increase() cannot see the first event of a series that appears with it.
  for (const event of WEBHOOK_EVENTS) for (const status of DeliveryStatus.options) attempts.inc({ event, status }, 0);
  for (const topic of retryTopics) retries.inc({ topic }, 0);
  return {
    attempted(event, eventAt, status, seconds) {
      attempts.inc({ event, status });
      attemptSeconds.observe(seconds);
      if (status === 'succeeded') lag.observe({ event }, Math.max(0, (Date.now() - Date.parse(eventAt)) / 1000));
    },
    retried: (topic) => retries.inc({ topic }),
  };
}
