// The series the alert rules (deploy/helm/img2img/files/alerts.yml) read: present from the start
// where an alert counts their increase, and sampled from their sources at each scrape.
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { apiMetrics } from '../../api/metrics.js';
import { consumerMetrics } from '../../consumer/metrics.js';
import { dispatcherMetrics } from '../../dispatcher/metrics.js';

const sampleOf = async (registry: Registry, name: string, labels: Record<string, string>) => {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const match = metric?.values.find((v) => Object.entries(labels).every(([k, value]) => v.labels[k] === value));
  return match?.value;
};

describe('consumer metrics', () => {
  it("export each model's restarts, dead letters and aborted jobs at 0 before any happens", async () => {
    const registry = new Registry();
    const metrics = consumerMetrics(registry, async () => new Map(), ['tiny', 'sd15']);
    for (const model of ['tiny', 'sd15']) {
      expect(await sampleOf(registry, 'img2img_runner_restarts_total', { model })).toBe(0);
      expect(await sampleOf(registry, 'img2img_dead_lettered_total', { model })).toBe(0);
      expect(await sampleOf(registry, 'img2img_jobs_finished_total', { model, priority: 'low', status: 'aborted' })).toBe(0);
    }
    metrics.deadLettered!('tiny');
    expect(await sampleOf(registry, 'img2img_dead_lettered_total', { model: 'tiny' })).toBe(1);
  });
});

describe('dispatcher metrics', () => {
  it('count retries by topic from 0, report the backlog per retry topic, and failed attempts from 0', async () => {
    const registry = new Registry();
    const topics = ['p.webhooks.retry.1', 'p.webhooks.retry.2'];
    const metrics = dispatcherMetrics(registry, async () => new Map([[topics[0]!, 7], [topics[1]!, 0]]), topics);
    expect(await sampleOf(registry, 'img2img_webhook_retries_total', { topic: topics[1]! })).toBe(0);
    expect(await sampleOf(registry, 'img2img_webhook_attempts_total', { event: 'succeeded', status: 'failed' })).toBe(0);
    metrics.retried(topics[0]!);
    metrics.retried(topics[0]!);
    metrics.attempted('succeeded', new Date().toISOString(), 'failed', 0.1);
    expect(await sampleOf(registry, 'img2img_webhook_retries_total', { topic: topics[0]! })).toBe(2);
    expect(await sampleOf(registry, 'img2img_webhook_attempts_total', { event: 'succeeded', status: 'failed' })).toBe(1);
    expect(await sampleOf(registry, 'img2img_webhook_retry_backlog', { topic: topics[0]! })).toBe(7);
  });

  it('leaves the backlog out when Kafka cannot be read, and still answers', async () => {
    const registry = new Registry();
    dispatcherMetrics(registry, async () => Promise.reject(new Error('kafka down')), []);
    expect(await sampleOf(registry, 'img2img_webhook_retry_backlog', {})).toBeUndefined();
  });
});

describe('API metrics', () => {
  it("sample the oldest queued job's age and each dependency of /readyz at every scrape (Redis as the limits' check)", async () => {
    const registry = new Registry();
    let states: { kafka: string; storage: string; limits?: string } = { kafka: 'ok', storage: 'ok', limits: 'ok' };
    apiMetrics(registry, { ages: async () => new Map([['tiny', { high: 0, normal: 42, low: 0 }]]), dependencies: async () => states });
    expect(await sampleOf(registry, 'img2img_queue_oldest_seconds', { model: 'tiny', priority: 'normal' })).toBe(42);
    expect(await sampleOf(registry, 'img2img_dependency_up', { dependency: 'redis' })).toBe(1);
    states = { kafka: 'unreachable: deadline exceeded', storage: 'ok', limits: 'unreachable: connect ECONNREFUSED' };
    expect(await sampleOf(registry, 'img2img_dependency_up', { dependency: 'kafka' })).toBe(0);
    expect(await sampleOf(registry, 'img2img_dependency_up', { dependency: 'storage' })).toBe(1);
    expect(await sampleOf(registry, 'img2img_dependency_up', { dependency: 'redis' })).toBe(0);
  });

  it("leaves the queue's ages out when their lookup hangs, and still reports the dependencies in time", async () => {
    const registry = new Registry();
    apiMetrics(registry, { ages: () => new Promise(() => {}), dependencies: async () => ({ kafka: 'unreachable: deadline exceeded', storage: 'ok' }) });
    // A scrape that waited for the hung lookup would outlast the test's own timeout.
    expect(await sampleOf(registry, 'img2img_queue_oldest_seconds', {})).toBeUndefined();
    expect(await sampleOf(registry, 'img2img_dependency_up', { dependency: 'kafka' })).toBe(0);
  });

  it("leaves the queue's ages out, not stale, when Kafka cannot be read", async () => {
    const registry = new Registry();
    let fail = false;
    apiMetrics(registry, { ages: async () => (fail ? Promise.reject(new Error('down')) : new Map([['tiny', { high: 5, normal: 0, low: 0 }]])), dependencies: async () => ({ kafka: 'ok', storage: 'ok' }) });
    expect(await sampleOf(registry, 'img2img_queue_oldest_seconds', { model: 'tiny', priority: 'high' })).toBe(5);
    fail = true;
    expect(await sampleOf(registry, 'img2img_queue_oldest_seconds', { model: 'tiny', priority: 'high' })).toBeUndefined();
  });
});
