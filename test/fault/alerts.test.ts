// One alert rule against the running system: a real Prometheus, with prometheus.yml's rule file
// loaded, scrapes an API process whose Redis (a redis-server of this test's own, so the shared one
// stays up) is stopped; Img2imgDependencyUnreachable{dependency="redis"} must be firing in
// /api/v1/alerts, and gone once Redis is back. The rule's `for` (1 min) is cut to 5 s in the
// test's copy of the rules; nothing else of the file changes. Prints how long each step took.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { allTopics } from '../../common/topics.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { answers, aptInstall, ChildService, ensureBinary, freePort, startApiProcess, type ApiProcess } from '../helpers/processes.js';

const RULES = 'deploy/helm/img2img/files/alerts.yml';
const ALERT = 'Img2imgDependencyUnreachable';
const prometheusBinary = ensureBinary('/usr/bin/prometheus', aptInstall('prometheus'));
const redisBinary = ensureBinary('/usr/bin/redis-server', aptInstall('redis-server'));

interface Alert {
  labels: Record<string, string>;
  state: 'pending' | 'firing';
}
interface RuleGroup {
  rules: { name: string; type: string; health: string; lastError?: string }[];
}

/** The alert rules with ALERT's `for` cut to 5 s; each swap must find its text. */
function testRules(): string {
  const text = readFileSync(RULES, 'utf8');
  const pattern = new RegExp(`(- alert: ${ALERT}\\n(?:.*\\n)*?\\s+for: )1m\\n`);
  if (!pattern.test(text)) throw new Error(`${RULES} no longer has ${ALERT} with for: 1m: update this test with it`);
  return text.replace(pattern, '$15s\n');
}

/** The repo's prometheus.yml with this test's ports, a 2 s scrape and evaluation, and the test's copy of the rules. */
function prometheusConfig(ports: { api: number; unused: number; prometheus: number }, rules: string): string {
  let text = readFileSync('prometheus.yml', 'utf8');
  const swaps: [RegExp, string][] = [
    [/(^\s*scrape_interval:\s*)\S+/m, '$12s'],
    [/(^\s*evaluation_interval:\s*)\S+/m, '$12s'],
    [new RegExp(`^(\\s*- )${RULES.replaceAll('.', '\\.')}$`, 'm'), `$1${rules}`],
    [/127\.0\.0\.1:8000/, `127.0.0.1:${ports.api}`],
    [/127\.0\.0\.1:9464/, `127.0.0.1:${ports.unused}`],
    [/127\.0\.0\.1:9465/, `127.0.0.1:${ports.unused}`],
    [/127\.0\.0\.1:9090/, `127.0.0.1:${ports.prometheus}`],
  ];
  for (const [pattern, replacement] of swaps) {
    if (!pattern.test(text)) throw new Error(`prometheus.yml no longer matches ${pattern}: update this test with it`);
    text = text.replace(pattern, replacement);
  }
  return text;
}

const redisServer = (port: number, dir: string) =>
  new ChildService('redis', redisBinary!, ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no']);

describe.skipIf(!prometheusBinary || !redisBinary)('an alert rule firing against the running system', () => {
  const env = { AUTH: 'on', AUTH_PEPPER: 'alerts-pepper-0123456789', LIMITS_WHEN_REDIS_DOWN: 'open', TOPIC_PREFIX: uniqueName('alerts'), LOG_LEVEL: 'error' };
  let dir = '';
  let redisPort = 0;
  let redis: ChildService | undefined;
  let prometheus: ChildService | undefined;
  let api: ApiProcess | undefined;
  let prometheusUrl = '';
  const started = Date.now();
  const seconds = (since: number) => ((Date.now() - since) / 1000).toFixed(1);

  const get = async <T>(path: string): Promise<T> => ((await (await fetch(`${prometheusUrl}${path}`)).json()) as { data: T }).data;
  const redisAlert = async () => (await get<{ alerts: Alert[] }>('/api/v1/alerts')).alerts.find((alert) => alert.labels.alertname === ALERT && alert.labels.dependency === 'redis');
  const until = async (what: string, probe: () => Promise<boolean>, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await probe())) {
      if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms; Prometheus:\n${prometheus?.tail()}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'alerts-'));
    redisPort = await freePort();
    redis = redisServer(redisPort, dir);
    await redis.until(async () => redis!.log.includes('Ready to accept connections'), 15_000, 'accept connections');
    const [apiPort, unused, prometheusPort] = [await freePort(), await freePort(), await freePort()];
    const rules = join(dir, 'alerts.yml');
    writeFileSync(rules, testRules());
    writeFileSync(join(dir, 'prometheus.yml'), prometheusConfig({ api: apiPort, unused, prometheus: prometheusPort }, rules));
    prometheus = new ChildService('prometheus', prometheusBinary!, [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${prometheusPort}`]);
    prometheusUrl = `http://127.0.0.1:${prometheusPort}`;
    [api] = await Promise.all([
      startApiProcess({ ...env, API_PORT: String(apiPort), REDIS_URL: `redis://127.0.0.1:${redisPort}` }),
      prometheus.until(() => answers(`${prometheusUrl}/-/ready`), 30_000, 'answer on /-/ready'),
    ]);
    console.log(`[alerts] Redis, the API and Prometheus up in ${seconds(started)} s`);
  }, 120_000);

  afterAll(async () => {
    await Promise.allSettled([api?.service.stop(), prometheus?.stop(), redis?.stop()]);
    if (dir) rmSync(dir, { recursive: true, force: true });
    const admin = createKafka(testConfig(env), uniqueName('cleanup')).admin();
    await admin.connect();
    await admin.deleteTopics({ topics: allTopics(env.TOPIC_PREFIX, ['tiny']) }).catch(() => {});
    await admin.disconnect();
    console.log(`[alerts] the test took ${seconds(started)} s`);
  }, 30_000);

  it("loads every rule of prometheus.yml's rule file, healthy", async () => {
    const expected = [...readFileSync(RULES, 'utf8').matchAll(/^\s*- alert: (\w+)$/gm)].map((match) => match[1]);
    await until('evaluated rules', async () => (await get<{ groups: RuleGroup[] }>('/api/v1/rules')).groups.flatMap((g) => g.rules).every((rule) => rule.health === 'ok'), 30_000);
    const rules = (await get<{ groups: RuleGroup[] }>('/api/v1/rules')).groups.flatMap((group) => group.rules);
    expect(rules.map((rule) => rule.name).sort()).toEqual(expected.sort());
    expect(rules.filter((rule) => rule.health !== 'ok')).toEqual([]);
  });

  it(`fires ${ALERT} for redis once the API's Redis is stopped, and not before or after`, async () => {
    // Healthy first: Prometheus has scraped img2img_dependency_up{dependency="redis"} 1, and the alert is not there.
    const up = async () => (await get<{ result: { value: [number, string] }[] }>(`/api/v1/query?query=${encodeURIComponent('img2img_dependency_up{dependency="redis"}')}`)).result;
    await until('a scrape with Redis up', async () => (await up())[0]?.value[1] === '1', 30_000);
    await new Promise((r) => setTimeout(r, 5000)); // two evaluations
    expect(await redisAlert()).toBeUndefined();

    let since = Date.now();
    await redis!.stop();
    await until(`${ALERT} firing`, async () => (await redisAlert())?.state === 'firing', 60_000);
    const firing = await redisAlert();
    expect(firing?.labels).toMatchObject({ alertname: ALERT, dependency: 'redis', component: 'api', severity: 'critical', instance: `127.0.0.1:${api!.port}` });
    console.log(`[alerts] Redis stopped -> ${ALERT}{dependency="redis"} firing in ${seconds(since)} s (for: 5 s, scrape and evaluation every 2 s)`);
    // Kafka and storage are up: only Redis is named.
    const all = (await get<{ alerts: Alert[] }>('/api/v1/alerts')).alerts.filter((alert) => alert.labels.alertname === ALERT);
    expect(all.map((alert) => alert.labels.dependency)).toEqual(['redis']);

    since = Date.now();
    redis = redisServer(redisPort, dir);
    await until(`${ALERT} resolved`, async () => (await redisAlert()) === undefined, 60_000);
    console.log(`[alerts] Redis back -> ${ALERT} resolved in ${seconds(since)} s`);
  }, 180_000);
});
