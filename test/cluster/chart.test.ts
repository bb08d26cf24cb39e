// The Helm chart installed for real into the control plane of `scripts/infra up k8s`: every object
// the default, 2-GPU and CPU-demo values render passes the API server's strict field validation
// and admission (CRD schemas for KEDA's ScaledObjects) and is stored with its defaults; an upgrade
// changes what the server holds; a change of an immutable selector comes back as Helm's error;
// an uninstall leaves nothing of the release behind, KEDA's HPAs and the pods included.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { api, collection, get, helm, helmOk, k8sWanted, list, until, type KubeObject } from './kube.js';

const CHART = 'deploy/helm/img2img';
const RELEASE = 'img2img';

/** Each rendered object's kind, apiVersion, name and YAML, split from Helm's multi-document output. */
function objectsOf(manifest: string): { apiVersion: string; kind: string; name: string; yaml: string }[] {
  return manifest
    .split(/^---$/m)
    .map((yaml) => ({ yaml, apiVersion: /^apiVersion: (\S+)$/m.exec(yaml)?.[1], kind: /^kind: (\S+)$/m.exec(yaml)?.[1], name: /^metadata:\n(?: {2}.*\n)*? {2}name: (\S+)$/m.exec(yaml)?.[1] }))
    .filter((o): o is { yaml: string; apiVersion: string; kind: string; name: string } => Boolean(o.apiVersion && o.kind && o.name));
}

const count = (objects: { kind: string }[]) =>
  Object.fromEntries([...new Set(objects.map((o) => o.kind))].sort().map((kind) => [kind, objects.filter((o) => o.kind === kind).length]));

/** What of the release a namespace still holds: every kind the chart makes, and what they make. */
async function leftovers(namespace: string): Promise<string[]> {
  const paths = [
    '/apis/apps/v1/namespaces/NS/deployments',
    '/apis/apps/v1/namespaces/NS/replicasets',
    '/api/v1/namespaces/NS/pods',
    '/api/v1/namespaces/NS/services',
    '/api/v1/namespaces/NS/configmaps',
    '/api/v1/namespaces/NS/serviceaccounts',
    '/api/v1/namespaces/NS/secrets',
    '/apis/policy/v1/namespaces/NS/poddisruptionbudgets',
    '/apis/autoscaling/v2/namespaces/NS/horizontalpodautoscalers',
    '/apis/keda.sh/v1alpha1/namespaces/NS/scaledobjects',
  ];
  const found = await Promise.all(paths.map(async (path) => (await list(path.replace('NS', namespace))).map((o) => `${path.split('/').at(-1)}/${o.metadata.name}`)));
  // What every namespace has: its default ServiceAccount and the cluster's CA bundle.
  return found.flat().filter((name) => name !== 'serviceaccounts/default' && name !== 'configmaps/kube-root-ca.crt');
}

describe.skipIf(!k8sWanted())('the chart installed into a real API server', () => {
  afterAll(async () => {
    for (const namespace of ['chart-strict', 'chart-default', 'chart-gpu2', 'chart-cpu']) await api('DELETE', `/api/v1/namespaces/${namespace}`);
  });

  it('the strict dry run refuses a field that a type or a CRD schema does not have', async () => {
    await api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'chart-strict' } });
    const { gitVersion } = (await get<{ gitVersion: string }>('/version'))!;
    const rendered = objectsOf(helmOk('template', RELEASE, CHART, '-n', 'chart-strict', '--kube-version', gitVersion));
    const refusals: string[] = [];
    for (const [kind, misspelt] of [['ScaledObject', /^ {2}minReplicaCount: 0$/m], ['Deployment', /^ {6}terminationGracePeriodSeconds: /m]] as const) {
      const o = rendered.find((x) => x.kind === kind)!;
      const yaml = o.yaml.replace(misspelt, (line) => line.replace(/(\w+):/, '$1x:'));
      const { status, body } = await api<{ message?: string }>('POST', `${collection(o.apiVersion, o.kind, 'chart-strict')}?dryRun=All&fieldValidation=Strict`, yaml, 'application/yaml');
      expect(status, kind).toBe(400);
      refusals.push(String(body.message));
    }
    expect(refusals[0]).toContain('unknown field "spec.minReplicaCountx"');
    expect(refusals[1]).toContain('unknown field "spec.template.spec.terminationGracePeriodSecondsx"');
  });

  describe.each([
    { name: 'default values', namespace: 'chart-default', values: [] as string[] },
    { name: '2-GPU values', namespace: 'chart-gpu2', values: [`${CHART}/ci/gpu-pool-2x-values.yaml`] },
    { name: 'CPU-demo values', namespace: 'chart-cpu', values: [`${CHART}/ci/cpu-demo-values.yaml`] },
  ])('with the $name', ({ namespace, values }) => {
    const files = values.flatMap((v) => ['-f', v]);
    let installed: ReturnType<typeof objectsOf> = [];

    beforeAll(async () => {
      const { status } = await api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: namespace } });
      expect([201, 409]).toContain(status);
    });

    it('renders objects that the API server accepts with strict field validation (a dry run)', async () => {
      // As `helm install` renders: for the server's Kubernetes version (the chart states a minimum).
      const { gitVersion } = (await get<{ gitVersion: string }>('/version'))!;
      const rendered = objectsOf(helmOk('template', RELEASE, CHART, '-n', namespace, '--kube-version', gitVersion, ...files));
      expect(rendered.length).toBeGreaterThan(0);
      const refused: string[] = [];
      for (const o of rendered) {
        const { status, body } = await api<{ message?: string }>('POST', `${collection(o.apiVersion, o.kind, namespace)}?dryRun=All&fieldValidation=Strict`, o.yaml, 'application/yaml');
        if (status !== 201 && status !== 200) refused.push(`${o.kind}/${o.name}: ${status} ${body.message}`);
      }
      expect(refused).toEqual([]);
    });

    it('installs: every object of the release is stored by the API server, with its defaults', async () => {
      const started = Date.now();
      helmOk('install', RELEASE, CHART, '-n', namespace, ...files);
      installed = objectsOf(helmOk('get', 'manifest', RELEASE, '-n', namespace));
      const stored: KubeObject[] = [];
      for (const o of installed) {
        const object = await get(`${collection(o.apiVersion, o.kind, namespace)}/${o.name}`);
        expect(object, `${o.kind}/${o.name}`).not.toBeNull();
        stored.push(object!);
      }
      console.log(`[k8s] helm install (${namespace}): ${installed.length} objects accepted in ${((Date.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(count(installed))}`);
      // Defaults the API server fills in: a Deployment's progress deadline and revision history,
      // a Service's cluster IP from the service range.
      for (const d of stored.filter((o) => o.kind === 'Deployment')) expect(d.spec).toMatchObject({ progressDeadlineSeconds: 600, revisionHistoryLimit: 10 });
      for (const s of stored.filter((o) => o.kind === 'Service')) expect(String(s.spec?.clusterIP)).toMatch(/^10\.0\.0\.\d+$/);
      expect(stored.filter((o) => o.kind === 'ScaledObject').length).toBeGreaterThan(0);
    });

    it('upgrades: the API server holds the new values', async () => {
      helmOk('upgrade', RELEASE, CHART, '-n', namespace, ...files, '--set', 'keda.cooldownPeriod=42');
      for (const o of installed.filter((x) => x.kind === 'ScaledObject')) {
        const scaled = await get(`${collection(o.apiVersion, o.kind, namespace)}/${o.name}`);
        expect(scaled?.spec?.cooldownPeriod, o.name).toBe(42);
      }
      expect(helmOk('status', RELEASE, '-n', namespace)).toMatch(/REVISION: 2/);
    });

    it('refuses a change of the Deployments\' immutable selector, as a clear Helm error', () => {
      const result = helm('upgrade', RELEASE, CHART, '-n', namespace, ...files, '--set', 'nameOverride=renamed');
      expect(result.status).not.toBe(0);
      expect(result.stderr).toMatch(/Deployment\.apps "[^"]+" is invalid: spec\.selector: Invalid value: .*field is immutable/);
      console.log(`[k8s] the refused upgrade: ${result.stderr.trim().split('\n').at(-1)?.slice(0, 300)}`);
    });

    it('uninstalls, leaving nothing of the release behind', async () => {
      helmOk('uninstall', RELEASE, '-n', namespace, '--wait', '--timeout', '2m');
      // The garbage collector removes what the objects owned: ReplicaSets, pods, KEDA's HPAs.
      const left = await until(`${namespace} to be empty`, async () => {
        const names = await leftovers(namespace);
        return names.length ? undefined : names;
      }, 90_000, 1000).catch(async (error: Error) => {
        throw new Error(`${error.message}; still there: ${(await leftovers(namespace)).join(', ')}`);
      });
      expect(left).toEqual([]);
      expect(helm('status', RELEASE, '-n', namespace).status).not.toBe(0);
    });
  });
});
