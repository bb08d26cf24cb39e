// The consumer's metrics: job timings by model and priority, runner health, queue depth.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { JobRecord } from '../common/jobs.js';
import { SECONDS_BUCKETS } from '../common/metrics.js';
import { PRIORITIES, type Priority } from '../common/topics.js';

/** Hooks for metrics; every one optional. */
export interface ConsumerMetrics {
  finished?(model: string, priority: Priority, status: string, record: JobRecord | undefined): void;
  retried?(model: string): void;
  deadLettered?(model: string): void;
  idleUnloaded?(model: string): void;
  runnerStarted?(model: string, seconds: number): void;
  runnerRestarted?(model: string): void;
  ranBatch?(model: string, batchSize: number, peakBytes: number, computeSeconds: number): void;
}

export type DepthSource = () => Promise<Map<string, Record<Priority, number>>>;

/**
 * `models`: the consumer's models, whose alerting counters (restarts, dead letters, aborted jobs)
 * are exported at 0 from the start: Prometheus' increase() cannot see a series' first event when
 * the series only appears with it.
 */
export function consumerMetrics(registry: Registry, depth: DepthSource, models: readonly string[] = []): ConsumerMetrics {
  const registers = [registry];
  const byModelPriority = ['model', 'priority'] as const;
  const queueWait = new Histogram({ name: 'img2img_queue_wait_seconds', help: 'Time from acceptance to the first start of a job', labelNames: byModelPriority, buckets: SECONDS_BUCKETS, registers });
  const run = new Histogram({ name: 'img2img_run_seconds', help: 'Time from the start of a job to its result', labelNames: byModelPriority, buckets: SECONDS_BUCKETS, registers });
  const endToEnd = new Histogram({ name: 'img2img_end_to_end_seconds', help: 'Time from acceptance to the stored result', labelNames: byModelPriority, buckets: SECONDS_BUCKETS, registers });
  const finished = new Counter({ name: 'img2img_jobs_finished_total', help: 'Jobs finished by a consumer, by outcome', labelNames: ['model', 'priority', 'status'], registers });
  const compute = new Histogram({ name: 'img2img_runner_compute_seconds', help: "Runner compute time of a job's batch", labelNames: ['model'], buckets: SECONDS_BUCKETS, registers });
  const peakMemory = new Gauge({ name: 'img2img_runner_peak_memory_bytes', help: 'Peak memory of the last batch (GPU allocated, or RSS on a CPU)', labelNames: ['model'], registers });
  const batchSize = new Histogram({ name: 'img2img_runner_batch_size', help: 'Jobs per pipeline call', labelNames: ['model'], buckets: [1, 2, 4, 8, 16, 32, 64], registers });
  const restarts = new Counter({ name: 'img2img_runner_restarts_total', help: 'Runner processes that died or hung and were replaced', labelNames: ['model'], registers });
  const starts = new Histogram({ name: 'img2img_runner_start_seconds', help: 'Runner start cost: spawn to ready (model load and warm-up)', labelNames: ['model'], buckets: SECONDS_BUCKETS, registers });
  const retries = new Counter({ name: 'img2img_job_retries_total', help: 'Job attempts retried after a retryable failure', labelNames: ['model'], registers });
  const deadLettered = new Counter({ name: 'img2img_dead_lettered_total', help: 'Messages sent to the dead-letter topic', labelNames: ['model'], registers });
  const idleUnloads = new Counter({ name: 'img2img_idle_unloads_total', help: 'Runners stopped after an idle period to free memory', labelNames: ['model'], registers });
  new Gauge({
    name: 'img2img_queue_depth',
    help: 'Messages waiting per model and priority (consumer group lag)',
    labelNames: byModelPriority,
    registers,
    async collect() {
      const depths = await depth().catch(() => undefined);
      for (const [model, perPriority] of depths ?? []) {
        for (const [priority, value] of Object.entries(perPriority)) if (priority !== 'total') this.set({ model, priority }, value);
      }
    },
  });

  for (const model of models) {
    for (const counter of [restarts, deadLettered, retries]) counter.inc({ model }, 0);
    for (const priority of PRIORITIES) finished.inc({ model, priority, status: 'aborted' }, 0);
  }

  const observeTimings = (model: string, priority: Priority, record: JobRecord) => {
    if (!record.timings) return;
    queueWait.observe({ model, priority }, record.timings.queue_s);
    run.observe({ model, priority }, record.timings.run_s);
    endToEnd.observe({ model, priority }, record.timings.total_s);
  };

  return {
    finished(model, priority, status, record) {
      finished.inc({ model, priority, status });
      if (status === 'succeeded' && record) observeTimings(model, priority, record);
    },
    ranBatch(model, size, peakBytes, computeSeconds) {
      batchSize.observe({ model }, size);
      peakMemory.set({ model }, peakBytes);
      compute.observe({ model }, computeSeconds);
    },
    retried: (model) => retries.inc({ model }),
    deadLettered: (model) => deadLettered.inc({ model }),
    idleUnloaded: (model) => idleUnloads.inc({ model }),
    runnerStarted: (model, seconds) => starts.observe({ model }, seconds),
    runnerRestarted: (model) => restarts.inc({ model }),
  };
}
