// The Helm chart (deploy/helm/img2img) passes `helm lint --strict`, and what `helm
// template` renders for each values file decodes strictly into the Kubernetes and KEDA API types
// and passes their checks (deploy/validate, a Go program). Helm is built from its Go module by
// `scripts/infra install helm`.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';

const CHART = 'deploy/helm/img2img';
const KUBE_VERSION = '1.33.0';
let helm: string;
let validator: string;

interface Report {
  objects: string[];
  consumers: {
    model: string;
    gpus: number;
    device: string;
    runnerGpus: string;
    shutdownGraceMs: number;
    terminationGracePeriodSeconds: number;
    nodeSelector: Record<string, string> | null;
    tolerations: number;
    partitions: number;
    replicas: number | null;
    hasPdb: boolean;
    gateway: string;
    gatewayService: string;
  }[];
  scaledObjects: { name: string; minReplicas: number; maxReplicas: number; lagThreshold: number; activationLagThreshold: number; topics: string[]; consumerGroup: string; formula: string }[];
  api: { hpaMin: number; hpaMax: number; readinessPath: string; livenessPath: string; servicePort: number; hasPdb: boolean; replicasUnset: boolean };
  errors: string[];
}

const timed = <T>(label: string, run: () => T): T => {
  const started = Date.now();
  const value = run();
  console.log(`[helm] ${label}: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return value;
};

beforeAll(() => {
  helm = timed('scripts/infra bin helm', () => execFileSync('bash', ['scripts/infra', 'bin', 'helm'], { encoding: 'utf8' }).trim());
  validator = join(mkdtempSync(join(tmpdir(), 'validate-')), 'validate');
  timed('go build deploy/validate', () =>
    execFileSync('go', ['build', '-buildvcs=false', '-o', validator, '.'], { cwd: resolve('deploy/validate'), stdio: ['ignore', 'inherit', 'inherit'] }),
  );
}, 600_000);

function lint(values: string[]): string {
  return execFileSync(helm, ['lint', CHART, '--strict', '--kube-version', KUBE_VERSION, ...values.flatMap((v) => ['-f', v])], { encoding: 'utf8' });
}

function render(values: string[], extra: string[] = []): string {
  return execFileSync(helm, ['template', 'img2img', CHART, '--kube-version', KUBE_VERSION, ...values.flatMap((v) => ['-f', v]), ...extra], { encoding: 'utf8' });
}

function validate(manifests: string): { status: number | null; report: Report; stderr: string } {
  const result = spawnSync(validator, ['-'], { input: manifests, encoding: 'utf8' });
  return { status: result.status, report: JSON.parse(result.stdout) as Report, stderr: result.stderr };
}

/** lagThreshold as the chart derives it: measured images/s per GPU x GPUs a pod x drainSeconds (30). */
const lagThreshold = (imagesPerSecond: number, gpus: number) => Math.floor(imagesPerSecond * Math.max(1, gpus) * 30);

describe.each([
  { name: 'default values (one GPU a pod)', values: [] as string[], gpus: 1, models: { sd15: 13.05, sdxl: 1.78 } },
  { name: 'a 2-GPU node pool', values: [`${CHART}/ci/gpu-pool-2x-values.yaml`], gpus: 2, models: { sd15: 13.05, sdxl: 1.78 } },
  { name: 'a CPU-only demo', values: [`${CHART}/ci/cpu-demo-values.yaml`], gpus: 0, models: { tiny: 0.7 } },
])('the chart with $name', ({ values, gpus, models }) => {
  let report: Report;

  it('passes helm lint --strict', () => {
    expect(timed('helm lint', () => lint(values))).toContain('1 chart(s) linted, 0 chart(s) failed');
  });

  it('renders objects that decode strictly into the Kubernetes and KEDA types and pass their checks', () => {
    const manifests = timed('helm template', () => render(values));
    const result = timed('validate', () => validate(manifests));
    report = result.report;
    console.log(`[helm] ${result.stderr.trim().split('\n').at(-1)}`);
    expect(result.report.errors).toEqual([]);
    expect(result.status).toBe(0);
    const kinds = new Set(report.objects.map((o) => o.split(' ')[0]));
    for (const kind of ['apps/v1/Deployment', 'v1/Service', 'autoscaling/v2/HorizontalPodAutoscaler', 'policy/v1/PodDisruptionBudget', 'v1/ConfigMap', 'keda.sh/v1alpha1/ScaledObject']) {
      expect(kinds, kind).toContain(kind);
    }
    expect(kinds).not.toContain('v1/Secret'); // secrets by reference only
  });

  it('has the API behind a Service with probes on /healthz and /readyz, an HPA on CPU and a PDB', () => {
    expect(report.api).toMatchObject({ readinessPath: '/readyz', livenessPath: '/healthz', hasPdb: true, replicasUnset: true });
    expect(report.api.hpaMax).toBeGreaterThanOrEqual(report.api.hpaMin);
    expect(report.api.servicePort).toBeGreaterThan(0);
  });

  it('runs one consumer Deployment per model with its GPUs, node placement, PDB and a grace over SHUTDOWN_GRACE_MS', () => {
    expect(report.consumers.map((c) => c.model).sort()).toEqual(Object.keys(models).sort());
    for (const consumer of report.consumers) {
      expect(consumer.gpus).toBe(gpus);
      expect(consumer.device).toBe(gpus > 0 ? 'cuda' : 'cpu');
      expect(consumer.runnerGpus).toBe(Array.from({ length: gpus }, (_, i) => i).join(','));
      expect(consumer.terminationGracePeriodSeconds * 1000).toBeGreaterThan(consumer.shutdownGraceMs);
      expect(consumer.hasPdb).toBe(true);
      expect(consumer.replicas).toBeNull(); // KEDA owns the count
      if (gpus > 0) {
        expect(Object.keys(consumer.nodeSelector ?? {}).length).toBeGreaterThan(0);
        expect(consumer.tolerations).toBeGreaterThan(0);
      } else {
        expect(consumer.nodeSelector).toBeNull();
        expect(consumer.tolerations).toBe(0);
      }
    }
  });

  it('scales each model from zero on its consumer group lag, at most one pod a partition, lagThreshold from the measured rate', () => {
    for (const [model, rate] of Object.entries(models)) {
      const scaled = report.scaledObjects.find((s) => s.consumerGroup === `img2img-${model}`);
      const consumer = report.consumers.find((c) => c.model === model)!;
      expect(scaled, model).toBeDefined();
      expect(scaled!.minReplicas).toBe(0);
      expect(scaled!.maxReplicas).toBeLessThanOrEqual(consumer.partitions);
      expect(scaled!.activationLagThreshold).toBe(0);
      expect(scaled!.lagThreshold).toBe(lagThreshold(rate, gpus));
      expect(scaled!.topics).toEqual(['high', 'normal', 'low'].map((p) => `img2img.${model}.${p}`));
      expect(scaled!.formula).toBe('high + normal + low');
    }
  });
});

describe('the chart with the worker gateway for remote GPU workers', () => {
  const values = [`${CHART}/ci/worker-gateway-values.yaml`];

  it('passes helm lint --strict', () => {
    expect(lint(values)).toContain('1 chart(s) linted, 0 chart(s) failed');
  });

  it('gives each model a Service to its consumers\' gateway port, listening beyond loopback, and keeps a pod up for the workers', () => {
    const { status, report } = validate(render(values));
    expect(report.errors).toEqual([]);
    expect(status).toBe(0);
    expect(report.consumers.map((c) => [c.model, c.gateway, c.gatewayService]).sort()).toEqual([
      ['sd15', 'on', 'img2img-consumer-sd15-gateway'],
      ['sdxl', 'on', 'img2img-consumer-sdxl-gateway'],
    ]);
    expect(report.scaledObjects.map((s) => s.minReplicas)).toEqual([1, 1]);
  });
});

describe('what the validation refuses', () => {
  it('a field the API types do not have (strict decoding)', () => {
    const manifests = render([]).replace(/^ {2}minReplicaCount: 0$/m, '  minReplicaCount: 0\n  minReplicaCont: 1');
    const misspelt = manifests.replace(/^ {6}terminationGracePeriodSeconds: (\d+)$/m, '      terminationGracePeriodSecond: $1');
    const { status, report } = validate(misspelt);
    expect(status).toBe(1);
    expect(report.errors.join('\n')).toContain('unknown field "spec.minReplicaCont"');
    expect(report.errors.join('\n')).toContain('unknown field "spec.template.spec.terminationGracePeriodSecond"');
  });

  it('a consumer whose termination grace does not cover SHUTDOWN_GRACE_MS', () => {
    // SHUTDOWN_GRACE_MS is 60 s by default: a 30 s grace would cut a shutdown short.
    const { status, report } = validate(render([]).replace(/terminationGracePeriodSeconds: 90$/gm, 'terminationGracePeriodSeconds: 30'));
    expect(status).toBe(1);
    expect(report.errors.join('\n')).toContain('terminationGracePeriodSeconds must exceed SHUTDOWN_GRACE_MS');
  });

  it('more consumer pods than partitions (the chart itself refuses to render)', () => {
    const result = spawnSync(helm, ['template', 'img2img', CHART, '--kube-version', KUBE_VERSION, '--set', 'kafka.partitions=4'], { encoding: 'utf8' });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('above kafka.partitions (4)');
  });

  it('the worker gateway on models that scale to zero (the chart itself refuses to render)', () => {
    const result = spawnSync(helm, ['template', 'img2img', CHART, '--kube-version', KUBE_VERSION, '--set', 'workerGateway.enabled=true'], { encoding: 'utf8' });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('workerGateway.enabled needs keda.minReplicas >= 1');
  });

  it('a worker gateway on the pod\'s loopback, without a Service to its port, or whose model may scale to zero', () => {
    const manifests = render([`${CHART}/ci/worker-gateway-values.yaml`])
      .replace(/(name: WORKER_GATEWAY_HOST\n\s+value: )0\.0\.0\.0/, '$1127.0.0.1')
      .replace(/^ {6}targetPort: gateway$/m, '      targetPort: metrics')
      .replace(/^ {2}minReplicaCount: 1$/m, '  minReplicaCount: 0');
    const { status, report } = validate(manifests);
    expect(status).toBe(1);
    const errors = report.errors.join('\n');
    expect(errors).toContain('WORKER_GATEWAY_HOST "127.0.0.1": the gateway would listen on the pod\'s loopback only');
    expect(errors).toContain('WORKER_GATEWAY is on but no Service routes to its port 8091');
    expect(errors).toContain('minReplicaCount must be at least 1');
  });

  it('a credential given as a plain value instead of a Secret reference', () => {
    const { status, report } = validate(render([], ['--set', 'api.env.S3_SECRET_KEY=hunter22']));
    expect(status).toBe(1);
    expect(report.errors.join('\n')).toContain('S3_SECRET_KEY is given as a plain value');
  });
});
