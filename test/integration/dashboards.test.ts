// The Grafana dashboards against real data: the API and a consumer run as processes, the
// real Prometheus scrapes them every second with the repo's prometheus.yml (ports swapped),
// the test makes every kind of event a panel shows happen (jobs, a runner crash, a poison
// message, an idle unload, refused requests, a webhook retried then delivered by a dispatcher
// process), then asks Prometheus every query of every panel.
// A panel that queries a metric the code does not export finds no data, and fails here.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { allTopics, jobTopic, webhookRetryTopics } from '../../common/topics.js';
import { json, pngImage, postJob } from '../helpers/api.js';
import { ConsumerProcess, waitFor } from '../helpers/consumer.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { answers, ChildService, ensureBinary, freePort, startApiProcess, type ApiProcess } from '../helpers/processes.js';
import { dispatcherProcess, Receiver } from '../helpers/webhooks.js';

const DASHBOARDS = 'grafana/dashboards';
const DATASOURCE_UID = /^\s*uid:\s*(\S+)/m.exec(readFileSync('grafana/provisioning/datasources/prometheus.yaml', 'utf8'))?.[1];

interface Panel {
  id?: number;
  type: string;
  title: string;
  gridPos?: unknown;
  datasource?: { uid?: string };
  targets?: { expr?: string; refId: string; datasource?: { uid?: string } }[];
  panels?: Panel[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating?: { list: { name: string; type: string; query?: unknown; definition?: string }[] };
}
interface Query {
  dashboard: string;
  panel: string;
  expr: string;
}

const dashboards: [string, Dashboard][] = readdirSync(DASHBOARDS)
  .filter((file) => file.endsWith('.json'))
  .map((file) => [file, JSON.parse(readFileSync(join(DASHBOARDS, file), 'utf8')) as Dashboard]);

/** Every panel, rows' nested panels included. */
const allPanels = (panels: Panel[]): Panel[] => panels.flatMap((panel) => [panel, ...allPanels(panel.panels ?? [])]);

/**
 * Grafana's variables as the test fills them in: the dashboards' own ($model, ${model:regex},
 * [[model]]) become "everything", and the built-in intervals become fixed windows.
 */
function substitute(expr: string, variables: string[]): string {
  let out = expr
    .replaceAll(/\$__rate_interval|\$\{__rate_interval\}|\$__interval|\$\{__interval\}/g, '1m')
    .replaceAll(/\$__range|\$\{__range\}/g, '5m');
  for (const name of variables) {
    out = out.replaceAll(new RegExp(`\\$\\{${name}(:[a-z]+)?\\}|\\[\\[${name}\\]\\]|\\$${name}\\b`, 'g'), '.*');
  }
  return out;
}

function queriesOf(file: string, dashboard: Dashboard): Query[] {
  const variables = (dashboard.templating?.list ?? []).map((variable) => variable.name);
  const fromPanels = allPanels(dashboard.panels).flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({ dashboard: file, panel: `${panel.title} [${target.refId}]`, expr: substitute(target.expr ?? '', variables) })),
  );
  // A variable's label_values(metric, label) must find the label too, or its drop-down is empty.
  const fromVariables = (dashboard.templating?.list ?? []).flatMap((variable) => {
    const definition = typeof variable.query === 'object' ? (variable.query as { query?: string }).query : (variable.definition ?? '');
    const match = /^label_values\((.+),\s*(\w+)\)$/.exec(definition ?? '');
    return match ? [{ dashboard: file, panel: `variable $${variable.name}`, expr: `group by (${match[2]}) (${match[1]})` }] : [];
  });
  return [...fromPanels, ...fromVariables];
}

const queries = dashboards.flatMap(([file, dashboard]) => queriesOf(file, dashboard));

describe('dashboard files', () => {
  it('are the two provisioned dashboards, each with a unique uid', () => {
    expect(dashboards.map(([file]) => file).sort()).toEqual(['models.json', 'overview.json']);
    expect(new Set(dashboards.map(([, d]) => d.uid)).size).toBe(dashboards.length);
  });

  it.each(dashboards)('%s: every panel is placed, has a unique id and queries the provisioned Prometheus', (_file, dashboard) => {
    const panels = allPanels(dashboard.panels);
    expect(DATASOURCE_UID).toBeDefined();
    expect(new Set(panels.map((p) => p.id)).size).toBe(panels.length);
    for (const panel of panels) {
      expect(panel.gridPos, panel.title).toBeDefined();
      if (panel.type === 'row') continue;
      expect(panel.targets?.length, `${panel.title} has no query`).toBeGreaterThan(0);
      for (const target of panel.targets!) {
        expect(target.expr?.trim(), `${panel.title} [${target.refId}] has no expr`).toBeTruthy();
        expect(target.datasource?.uid ?? panel.datasource?.uid, `${panel.title} [${target.refId}]`).toBe(DATASOURCE_UID);
      }
    }
  });

  it('leaves no dashboard variable unresolved', () => {
    for (const { panel, expr } of queries) expect(expr, panel).not.toMatch(/\$\w|\[\[/);
  });

  it('shows throughput, latency percentiles, queue depth, failures, DLQ, time and memory, batches and the runner lifecycle', () => {
    const text = (file: string) => queries.filter((q) => q.dashboard === file).map((q) => q.expr).join('\n');
    for (const metric of ['img2img_jobs_submitted_total', 'img2img_jobs_finished_total', 'img2img_queue_depth', 'img2img_dead_lettered_total', 'http_requests_total']) {
      expect(text('overview.json')).toContain(metric);
    }
    expect(text('overview.json')).toMatch(/histogram_quantile\(0\.95, sum by \(le, model\) \(rate\(img2img_end_to_end_seconds_bucket/);
    for (const metric of ['img2img_webhook_attempts_total', 'img2img_webhook_delivery_lag_seconds_bucket', 'img2img_webhook_attempt_seconds_bucket']) {
      expect(text('overview.json')).toContain(metric);
    }
    for (const metric of ['img2img_run_seconds', 'img2img_runner_peak_memory_bytes', 'img2img_runner_batch_size', 'img2img_runner_restarts_total', 'img2img_idle_unloads_total', 'img2img_runner_start_seconds']) {
      expect(text('models.json')).toContain(metric);
    }
  });
});

// ---------------------------------------------------------------- against real data

const prometheusBinary = ensureBinary('/usr/bin/prometheus', ['bash', 'scripts/infra', 'install', 'debian']);

interface PromResponse {
  status: string;
  error?: string;
  data: { resultType: string; result: unknown[] } | string[] | { activeTargets: { labels: { job: string }; health: string; lastError: string; scrapeUrl: string }[] };
}

/** The repo's prometheus.yml with this test's ports and a 1 s scrape; each swap must find its text. */
function prometheusConfig(ports: { api: number; consumer: number; dispatcher: number; prometheus: number }): string {
  let text = readFileSync('prometheus.yml', 'utf8');
  const swaps: [RegExp, string][] = [
    [/(^\s*scrape_interval:\s*)\S+/m, '$11s'],
    [/127\.0\.0\.1:8000/, `127.0.0.1:${ports.api}`],
    [/127\.0\.0\.1:9464/, `127.0.0.1:${ports.consumer}`],
    [/127\.0\.0\.1:9465/, `127.0.0.1:${ports.dispatcher}`],
    [/127\.0\.0\.1:9090/, `127.0.0.1:${ports.prometheus}`],
  ];
  for (const [pattern, replacement] of swaps) {
    if (!pattern.test(text)) throw new Error(`prometheus.yml no longer matches ${pattern}: update this test with it`);
    text = text.replace(pattern, replacement);
  }
  return text;
}

describe.skipIf(!prometheusBinary)('dashboards against a real Prometheus scraping the API and a consumer', () => {
  const config = testConfig({ TOPIC_PREFIX: uniqueName('dash') });
  const kafka = createKafka(config, uniqueName('dashboards'));
  const producer = kafka.producer();
  let prometheusUrl = '';
  let dir = '';
  let prometheus: ChildService | undefined;
  let api: ApiProcess | undefined;
  let consumer: ConsumerProcess | undefined;
  let dispatcher: ChildService | undefined;
  // Answers 500 to the first delivery and 200 to the retry: both kinds of attempt are counted.
  const hooks = new Receiver((_request, index) => ({ status: index === 0 ? 500 : 200 }));

  const query = async (path: string, params: Record<string, string> = {}): Promise<PromResponse> => {
    const response = await fetch(`${prometheusUrl}${path}?${new URLSearchParams(params)}`);
    return json<PromResponse>(response);
  };

  beforeAll(async () => {
    const [apiPort, consumerPort, dispatcherPort, prometheusPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
    dir = mkdtempSync(join(tmpdir(), 'prometheus-'));
    writeFileSync(join(dir, 'prometheus.yml'), prometheusConfig({ api: apiPort, consumer: consumerPort, dispatcher: dispatcherPort, prometheus: prometheusPort }));
    await hooks.start();
    // Its metrics answer once it has chosen where its group starts on the events topic.
    dispatcher = dispatcherProcess(config, { DISPATCHER_METRICS_PORT: String(dispatcherPort) });
    prometheus = new ChildService('prometheus', prometheusBinary!, [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${prometheusPort}`,
    ]);
    prometheusUrl = `http://127.0.0.1:${prometheusPort}`;
    // Idle unload after 1 s, so the test sees one; a short grace, so the consumer stops quickly.
    consumer = await new ConsumerProcess({
      TOPIC_PREFIX: config.TOPIC_PREFIX, CONSUMER_METRICS_PORT: String(consumerPort), IDLE_UNLOAD_MS: '1000', SHUTDOWN_GRACE_MS: '1000',
    }).start();
    await Promise.all([
      startApiProcess({ TOPIC_PREFIX: config.TOPIC_PREFIX, API_PORT: String(apiPort), WEBHOOK_ALLOW_PRIVATE: '1' }).then((started) => (api = started)),
      dispatcher.until(() => answers(`http://127.0.0.1:${dispatcherPort}/metrics`), 60_000, 'serve its metrics'),
      consumer.ready(),
      prometheus.until(() => answers(`${prometheusUrl}/-/ready`), 30_000, 'answer on /-/ready'),
      producer.connect(),
    ]);
  }, 90_000);

  afterAll(async () => {
    await Promise.allSettled([consumer?.stop('SIGTERM'), api?.service.stop('SIGTERM'), dispatcher?.stop('SIGTERM'), prometheus?.stop('SIGTERM'), producer.disconnect(), hooks.close()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: [...allTopics(config.TOPIC_PREFIX, ['tiny']), ...webhookRetryTopics(config.TOPIC_PREFIX)] }).catch(() => {});
    await admin.disconnect();
  }, 30_000);

  /** Submits through the API and answers the job id. */
  async function submit(query: Record<string, string>, image?: Uint8Array): Promise<string> {
    const response = await postJob(api!.url, { query: { model_name: 'tiny', prompt: 'a lighthouse', ...query }, image });
    expect(response.status).toBe(202);
    return (await json(response)).id as string;
  }

  const job = async (id: string) => json(await fetch(`${api!.url}/api/jobs/${id}`));

  /** The events every panel shows: jobs, a runner crash with retries, a poison message, an idle unload, refused requests. */
  async function exercise(): Promise<void> {
    const slow = await submit({ priority: 'high', steps: '40', strength: '1' }, await pngImage(256, 256));
    const quick = await submit({ priority: 'normal', steps: '4', webhook_url: hooks.url() }, await pngImage(64, 64));
    // A message no consumer can parse: failed and dead-lettered.
    await producer.send({ topic: jobTopic(config.TOPIC_PREFIX, 'tiny', 'low'), messages: [{ key: 'poison', value: '{not json' }] });
    // Requests the API refuses: an unknown model (400) and an unknown job (404).
    expect((await postJob(api!.url, { query: { model_name: 'no-such-model', prompt: 'x' } })).status).toBe(400);
    expect((await fetch(`${api!.url}/api/jobs/AAAAAAAAAAAAAAAAAAAAAA`)).status).toBe(404);

    // Kill the runner in the middle of the slow job: a restart, and retries of what it held.
    await waitFor(async () => ((await job(slow)).progress?.step > 0 ? true : undefined), 60_000, 'progress of the slow job');
    const pid = consumer!.runnerPid();
    expect(pid).toBeDefined();
    process.kill(pid!, 'SIGKILL');

    for (const id of [slow, quick]) {
      const done = await waitFor(async () => {
        const view = await job(id);
        return ['succeeded', 'failed', 'canceled'].includes(view.status) ? view : undefined;
      }, 60_000, `job ${id} to finish`);
      expect(done.status, JSON.stringify(done.error)).toBe('succeeded');
    }
    await waitFor(async () => (consumer!.log.includes('idle: stopping the runner') ? true : undefined), 15_000, 'the idle unload');
    await waitFor(async () => (hooks.about(quick).some((request) => request.status === 200) ? true : undefined), 30_000, 'the webhook delivered after a retry');
  }

  /** Each query's result, asked again until all have data or time runs out (counters need two scrapes for rate()). */
  async function emptyQueries(timeoutMs: number): Promise<Query[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const empty: Query[] = [];
      for (const q of queries) {
        const answer = await query('/api/v1/query', { query: q.expr });
        expect(answer.status, `${q.dashboard} ${q.panel}: ${answer.error}\n${q.expr}`).toBe('success');
        if (!(answer.data as { result: unknown[] }).result.length) empty.push(q);
      }
      if (!empty.length || Date.now() > deadline) return empty;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  it('every query of every panel returns data once the service has worked', async () => {
    await exercise();

    const targets = await query('/api/v1/targets');
    const active = (targets.data as { activeTargets: { labels: { job: string }; health: string; lastError: string; scrapeUrl: string }[] }).activeTargets;
    for (const target of active) expect(`${target.scrapeUrl}: ${target.health} ${target.lastError}`).toMatch(/: up $/);

    const empty = await emptyQueries(15_000);
    const exported = new Set((await query('/api/v1/label/__name__/values')).data as string[]);
    const unknown = queries.flatMap((q) =>
      [...q.expr.matchAll(/\b(?:img2img|http|process|nodejs)_\w+(?=\s*[{[)])/g)]
        .map((m) => m[0])
        .filter((name) => !exported.has(name))
        .map((name) => `${q.dashboard} ${q.panel}: ${name} is exported by no process`),
    );
    expect(unknown).toEqual([]);
    expect(empty.map((q) => `${q.dashboard} ${q.panel}: no data for ${q.expr}`)).toEqual([]);
  }, 120_000);
});
