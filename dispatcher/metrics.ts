// The webhook dispatcher's Prometheus metrics (served on DISPATCHER_METRICS_PORT): every attempt
// by event and by what it left the delivery as, how long attempts take, and how long after its
// event a delivery arrived, retries included (the figure a receiver feels).
import { Counter, Histogram, type Registry } from 'prom-client';
import { SECONDS_BUCKETS } from '../common/metrics.js';
import type { DeliveryStatus } from '../common/webhooks.js';

/** SECONDS_BUCKETS, then the retry schedule's scale: an hour to the 30 h of the last retry. */
const LAG_BUCKETS = [...SECONDS_BUCKETS, 1800, 3600, 6 * 3600, 24 * 3600, 36 * 3600];

export interface DeliveryMetrics {
  /** One attempt at a delivery of `event` (which happened at eventAt), and the status it left the delivery in. */
  attempted(event: string, eventAt: string, status: DeliveryStatus, seconds: number): void;
}

export function dispatcherMetrics(registry: Registry): DeliveryMetrics {
  const attempts = new Counter({
    name: 'img2img_webhook_attempts_total',
    help: 'Webhook delivery attempts, by event and by the delivery status after the attempt: succeeded, pending (a retry is scheduled), failed (retries spent or not retryable), stopped (the receiver answered 410)',
    labelNames: ['event', 'status'],
    registers: [registry],
  });
  const attemptSeconds = new Histogram({
    name: 'img2img_webhook_attempt_seconds',
    help: 'Duration of one delivery attempt: resolve, connect, send, answer',
    buckets: SECONDS_BUCKETS,
    registers: [registry],
  });
  const lag = new Histogram({
    name: 'img2img_webhook_delivery_lag_seconds',
    help: 'From an event to its successful delivery, retries included',
    labelNames: ['event'],
    buckets: LAG_BUCKETS,
    registers: [registry],
  });
  return {
    attempted(event, eventAt, status, seconds) {
      attempts.inc({ event, status });
      attemptSeconds.observe(seconds);
      if (status === 'succeeded') lag.observe({ event }, Math.max(0, (Date.now() - Date.parse(eventAt)) / 1000));
    },
  };
}
