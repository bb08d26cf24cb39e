// The alert rules (deploy/helm/img2img/files/alerts.yml) pass `promtool check rules`, their
// unit tests (test/prometheus/alerts.test.yml) pass `promtool test rules`, every alert has a case
// where it fires and one where it does not, and every metric they read is one the code exports.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { aptInstall, ensureBinary } from '../helpers/processes.js';

const RULES = 'deploy/helm/img2img/files/alerts.yml';
const TESTS = 'test/prometheus/alerts.test.yml';
const promtool = ensureBinary('/usr/bin/promtool', aptInstall('prometheus'));

const run = (...args: string[]) => {
  const result = spawnSync(promtool!, args, { encoding: 'utf8' });
  return { status: result.status, output: result.stdout + result.stderr };
};

const alerts = [...readFileSync(RULES, 'utf8').matchAll(/^\s*- alert: (\w+)$/gm)].map((match) => match[1]!);

/** Each alert_rule_test case of the test file: its alert and whether it expects it firing. */
function cases(): { alert: string; firing: boolean }[] {
  const lines = readFileSync(TESTS, 'utf8').split('\n');
  const found: { alert: string; firing: boolean }[] = [];
  lines.forEach((line, i) => {
    const name = /^\s*alertname: (\w+)$/.exec(line)?.[1];
    if (!name) return;
    const expected = lines[i + 1] ?? '';
    expect(expected, `the line after alertname: ${name}`).toMatch(/^\s*exp_alerts:/);
    found.push({ alert: name, firing: !/exp_alerts: \[\]/.test(expected) });
  });
  return found;
}

describe('the alert rules', () => {
  it('have promtool', () => {
    expect(promtool, 'promtool (Debian package prometheus; scripts/infra install debian)').toBeDefined();
  });

  it('pass promtool check rules', () => {
    const { status, output } = run('check', 'rules', RULES);
    expect(status, output).toBe(0);
    expect(output).toContain(`SUCCESS: ${alerts.length} rules found`);
  });

  it('pass their promtool unit tests', () => {
    const { status, output } = run('test', 'rules', TESTS);
    expect(status, output).toBe(0);
    const all = cases();
    console.log(`[alerts] promtool test rules: ${alerts.length} rules, ${all.filter((c) => c.firing).length} cases firing, ${all.filter((c) => !c.firing).length} not firing`);
  });

  it.each(alerts)('%s has a case firing and one not firing', (alert) => {
    const mine = cases().filter((c) => c.alert === alert);
    expect(mine.some((c) => c.firing), 'firing').toBe(true);
    expect(mine.some((c) => !c.firing), 'not firing').toBe(true);
  });

  it('are loaded by the native Prometheus (prometheus.yml, relative to it) and by the compose one (mounted where prometheus.docker.yml looks)', () => {
    const { status, output } = run('check', 'config', 'prometheus.yml');
    expect(status, output).toBe(0);
    expect(output).toContain(`Checking ${RULES}\n  SUCCESS: ${alerts.length} rules found`);
    expect(readFileSync('prometheus.docker.yml', 'utf8')).toMatch(/^rule_files:\n {2}- \/etc\/prometheus\/rules\/\*\.yml$/m);
    expect(readFileSync('docker-compose.yaml', 'utf8')).toContain(`- ./${RULES}:/etc/prometheus/rules/img2img.yml:ro`);
  });

  it('read only metrics the processes export', () => {
    const exprs = [...readFileSync(RULES, 'utf8').matchAll(/^\s*expr: ([\s\S]*?)\n\s*(?:for|labels):/gm)].map((match) => match[1]!).join('\n');
    const names = new Set([...exprs.matchAll(/\b(img2img_[a-z_]+|http_[a-z_]+|process_[a-z_]+)\b/g)].map((match) => match[1]!));
    expect(names.size).toBe(10);
    const sources = ['api', 'consumer', 'dispatcher', 'common'].flatMap((dir) => tsFiles(dir)).map((file) => readFileSync(file, 'utf8')).join('\n');
    // Node's process metrics come from prom-client's collectDefaultMetrics (common/metrics.ts).
    const defaults = readdirSync('node_modules/prom-client/lib/metrics').filter((file) => file.endsWith('.js')).map((file) => readFileSync(join('node_modules/prom-client/lib/metrics', file), 'utf8')).join('\n');
    for (const name of names) {
      const declared = new RegExp(`name: '${name}'`).test(sources) || (name.startsWith('process_') && defaults.includes(`'${name}'`));
      expect(declared, `${name} is exported by no process`).toBe(true);
    }
  });
});

function tsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.ts'))
    .map((entry) => join(entry.parentPath, entry.name));
}
