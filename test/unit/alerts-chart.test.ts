// The chart's PrometheusRule (deploy/helm/img2img, monitoring.prometheusRule.enabled): the rules
// file as it is (so the chart and the Prometheus configs cannot drift apart), decoded strictly into
// the Prometheus Operator's type by deploy/validate, its PromQL parsed by promtool as the operator's
// admission webhook does, and never rendered where the CRD is missing unless asked to.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { aptInstall, ensureBinary } from '../helpers/processes.js';

const CHART = 'deploy/helm/img2img';
const RULES = `${CHART}/files/alerts.yml`;
const KUBE_VERSION = '1.33.0';
const ON = ['--set', 'monitoring.prometheusRule.enabled=true'];
const promtool = ensureBinary('/usr/bin/promtool', aptInstall('prometheus'));
let helm: string;
let validator: string;
let dir: string;

beforeAll(() => {
  helm = execFileSync('bash', ['scripts/infra', 'bin', 'helm'], { encoding: 'utf8' }).trim();
  dir = mkdtempSync(join(tmpdir(), 'rules-chart-'));
  validator = join(dir, 'validate');
  execFileSync('go', ['build', '-buildvcs=false', '-o', validator, '.'], { cwd: resolve('deploy/validate'), stdio: ['ignore', 'inherit', 'inherit'] });
}, 600_000);

const template = (args: string[]) => spawnSync(helm, ['template', 'img2img', CHART, '--kube-version', KUBE_VERSION, ...args], { encoding: 'utf8' });

/** The rendered PrometheusRule document, or undefined. */
const ruleDocument = (manifests: string) => manifests.split(/^---$/m).find((doc) => /^kind: PrometheusRule$/m.test(doc));

describe("the chart's PrometheusRule", () => {
  it('is not rendered by default', () => {
    const result = template([]);
    expect(result.status, result.stderr).toBe(0);
    expect(ruleDocument(result.stdout)).toBeUndefined();
  });

  it('refuses to render where the cluster has no PrometheusRule CRD, naming it', () => {
    const result = template(ON);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain("needs the Prometheus Operator's PrometheusRule CRD (monitoring.coreos.com/v1)");
  });

  it('renders where the CRD is, decodes strictly into the operator type and passes the validator with the rest of the chart', () => {
    const result = template([...ON, '--api-versions', 'monitoring.coreos.com/v1/PrometheusRule', '--set', 'monitoring.prometheusRule.labels.release=kube-prometheus-stack']);
    expect(result.status, result.stderr).toBe(0);
    const validated = spawnSync(validator, ['-'], { input: result.stdout, encoding: 'utf8' });
    const report = JSON.parse(validated.stdout) as { errors: string[]; objects: string[]; prometheusRules: { name: string; alerts: string[] }[] };
    expect(report.errors).toEqual([]);
    expect(validated.status).toBe(0);
    expect(report.objects).toContain('monitoring.coreos.com/v1/PrometheusRule img2img');
    const alerts = [...readFileSync(RULES, 'utf8').matchAll(/^\s*- alert: (\w+)$/gm)].map((match) => match[1]);
    expect(report.prometheusRules).toEqual([{ name: 'img2img', groups: expect.any(Array), alerts }]);
    expect(ruleDocument(result.stdout)).toMatch(/^ {4}release: kube-prometheus-stack$/m);
  });

  it('holds files/alerts.yml as it is, whose groups promtool accepts', () => {
    const document = ruleDocument(template([...ON, '--set', 'monitoring.prometheusRule.skipCrdCheck=true']).stdout)!;
    const spec = document.slice(document.indexOf('\nspec:\n') + '\nspec:\n'.length).replace(/^ {2}/gm, '');
    expect(spec.trimEnd()).toBe(readFileSync(RULES, 'utf8').trimEnd());
    const file = join(dir, 'rendered-rules.yml');
    writeFileSync(file, spec);
    const checked = spawnSync(promtool!, ['check', 'rules', file], { encoding: 'utf8' });
    expect(checked.status, checked.stdout + checked.stderr).toBe(0);
    expect(checked.stdout).toContain(`SUCCESS: ${[...spec.matchAll(/- alert: /g)].length} rules found`);
  });

  it('passes helm lint --strict when enabled', () => {
    const linted = spawnSync(helm, ['lint', CHART, '--strict', '--kube-version', KUBE_VERSION, ...ON, '--set', 'monitoring.prometheusRule.skipCrdCheck=true'], { encoding: 'utf8' });
    expect(linted.stdout, linted.stderr).toContain('1 chart(s) linted, 0 chart(s) failed');
  });

  it('is refused by the validator when a rule is misspelt or its `for` is no duration', () => {
    const manifests = template([...ON, '--set', 'monitoring.prometheusRule.skipCrdCheck=true']).stdout;
    const errorsOf = (text: string) => {
      const validated = spawnSync(validator, ['-'], { input: text, encoding: 'utf8' });
      expect(validated.status).toBe(1);
      return (JSON.parse(validated.stdout) as { errors: string[] }).errors.join('\n');
    };
    expect(errorsOf(manifests.replace(/^( {10})for: 5m$/m, '$1fore: 5m'))).toContain('unknown field "spec.groups[0].rules[1].fore"');
    expect(errorsOf(manifests.replace(/^( {10})for: 15m$/m, '$1for: 15 minutes'))).toContain('alert Img2imgQueueLagGrowing: for "15 minutes" is not a Prometheus duration');
  });
});
