// The real KEDA operator scales a model's consumer Deployment on real Kafka lag: the chart's CPU-demo
// release (model `tiny`, 3 partitions) in the control plane of `scripts/infra up k8s`, its
// ScaledObject reading the cluster suite's 3-node Kafka. Jobs below the activation threshold leave
// it at zero pods; more jobs make KEDA activate it and the HPA (through KEDA's external metrics API)
// size it at one pod per lagThreshold queued jobs as the chart computes it, never more pods than
// partitions; kwok runs the pods; a consumer group that commits every offset
// drains the lag and KEDA takes the Deployment back to zero after the cooldown. Three runs; the
// times of each are printed as a JSON line.
import { Kafka, logLevel, type Admin, type Consumer, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureTopics } from '../../common/kafka.js';
import { newJobId, type JobMessage } from '../../common/jobs.js';
import { PRIORITIES, consumerGroup, jobTopic, type Priority } from '../../common/topics.js';
import { kafkaBrokers } from './cluster.js';
import { api, get, helmOk, k8sWanted, list, until, type KubeObject } from './kube.js';

const CHART = 'deploy/helm/img2img';
const NAMESPACE = 'keda-lag';
const MODEL = 'tiny';
const PREFIX = `kedalag${Date.now().toString(36)}`;
const PARTITIONS = 3; // the CPU-demo values' kafka.partitions, and so the model's maxReplicas
const ACTIVATION = 5; // keda.activationLagThreshold for this release
const POLLING_S = 2;
const COOLDOWN_S = 10;
/** The chart's lagThreshold for the CPU demo: 0.70 images/s x 1 pod x 30 s. */
const LAG_THRESHOLD = Math.floor(0.7 * 1 * 30);
const FIRST = 30; // with the jobs below the activation threshold, a lag of 33: ceil(33 / 21) = 2 pods
const BURST = 120; // a lag of 153: ceil(153 / 21) = 8 pods wanted, more than the partitions allow
const HPA_SYNC_S = 5; // kube-controller-manager's --horizontal-pod-autoscaler-sync-period (scripts/infra.d/k8s.sh)
const RUNS = 3;

const DEPLOYMENT = `/apis/apps/v1/namespaces/${NAMESPACE}/deployments/img2img-consumer-${MODEL}`;
const SCALED_OBJECT = `/apis/keda.sh/v1alpha1/namespaces/${NAMESPACE}/scaledobjects/img2img-consumer-${MODEL}`;
const topics = PRIORITIES.map((p) => jobTopic(PREFIX, MODEL, p));
const group = consumerGroup(PREFIX, MODEL);

let kafka: Kafka;
let admin: Admin;
let producer: Producer;

const replicas = async () => Number((await get(DEPLOYMENT))?.spec?.replicas ?? 0);
const active = async () => {
  const conditions = ((await get(SCALED_OBJECT))?.status?.conditions ?? []) as { type: string; status: string }[];
  return conditions.find((c) => c.type === 'Active')?.status === 'True';
};
const runningPods = async () =>
  (await list(`/api/v1/namespaces/${NAMESPACE}/pods?labelSelector=img2img/model=${MODEL}`)).filter((p: KubeObject) => p.status?.phase === 'Running').length;

async function produce(count: number, priorities: readonly Priority[]): Promise<void> {
  for (const priority of priorities) {
    const messages = Array.from({ length: Math.ceil(count / priorities.length) }, () => {
      const job: JobMessage = { v: 1, id: newJobId(), model_name: MODEL, priority, created_at: new Date().toISOString() };
      return { key: job.id, value: JSON.stringify(job) };
    });
    await producer.send({ topic: jobTopic(PREFIX, MODEL, priority), messages, acks: -1 });
  }
}

/** The group's lag over the model's three topics, as KEDA counts it (end offset minus committed). */
async function lag(): Promise<number> {
  let total = 0;
  for (const topic of topics) {
    const ends = await admin.fetchTopicOffsets(topic);
    const [committed] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    for (const end of ends) {
      const offset = Number(committed?.partitions.find((p) => p.partition === end.partition)?.offset ?? -1);
      total += Number(end.high) - Math.max(0, offset);
    }
  }
  return total;
}

/** A consumer of the model's group that commits every message it reads, until the lag is 0. */
async function drain(): Promise<void> {
  const consumer: Consumer = kafka.consumer({ groupId: group, sessionTimeout: 10_000, heartbeatInterval: 1000 });
  await consumer.connect();
  await consumer.subscribe({ topics, fromBeginning: true });
  await consumer.run({ autoCommitThreshold: 1, eachMessage: async () => {} });
  try {
    await until('the lag to be consumed', async () => ((await lag()) === 0 ? true : undefined), 120_000, 250);
  } finally {
    await consumer.disconnect();
  }
}

const since = (t: number) => Number(((Date.now() - t) / 1000).toFixed(1));

describe.skipIf(!k8sWanted())('KEDA scales a model\'s consumers on its Kafka lag', () => {
  beforeAll(async () => {
    kafka = new Kafka({ clientId: 'keda-lag-test', brokers: kafkaBrokers.split(','), logLevel: logLevel.NOTHING });
    admin = kafka.admin();
    await admin.connect();
    await ensureTopics(admin, topics, PARTITIONS);
    producer = kafka.producer();
    await producer.connect();
    await api('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NAMESPACE } });
    // The Secrets the chart names (as docs/DEPLOY.md has them created first): KEDA resolves the
    // consumer's environment, and stops at a missing one.
    for (const [name, stringData] of [['img2img-s3', { 'access-key': 'minioadmin', 'secret-key': 'minioadmin' }], ['img2img-redis', { url: 'redis://127.0.0.1:6379' }]] as const) {
      const { status } = await api('POST', `/api/v1/namespaces/${NAMESPACE}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name }, stringData });
      expect(status, name).toBe(201);
    }
    helmOk(
      'install', 'img2img', CHART, '-n', NAMESPACE, '-f', `${CHART}/ci/cpu-demo-values.yaml`,
      '--set', `kafka.brokers={${kafkaBrokers}}`, '--set', `kafka.topicPrefix=${PREFIX}`,
      '--set', `keda.pollingInterval=${POLLING_S}`, '--set', `keda.cooldownPeriod=${COOLDOWN_S}`,
      '--set', 'keda.scaleDownStabilizationSeconds=0', '--set', `keda.activationLagThreshold=${ACTIVATION}`,
    );
    // A new ScaledObject without lag takes its Deployment (created with one replica) to zero.
    await until('the consumer Deployment at zero replicas', async () => ((await replicas()) === 0 ? true : undefined), 120_000);
  }, 200_000);

  afterAll(async () => {
    await producer?.disconnect();
    await admin?.disconnect();
    await api('DELETE', `/api/v1/namespaces/${NAMESPACE}`).catch(() => {});
  });

  it(`scales up from zero on lag, to at most ${PARTITIONS} pods, and back to zero once it is consumed (${RUNS} runs)`, async () => {
    const runs: Record<string, number>[] = [];
    for (let run = 1; run <= RUNS; run++) {
      // Below the activation threshold: nothing happens over three polling intervals.
      await produce(ACTIVATION - 2, ['high']);
      await new Promise((resolve) => setTimeout(resolve, 3 * POLLING_S * 1000 + 1000));
      expect(await active(), 'active below the activation threshold').toBe(false);
      expect(await replicas(), 'replicas below the activation threshold').toBe(0);

      // ceil(33 / 21) = 2 pods: the HPA follows the chart's lag per replica, below the partitions.
      const lagAt = Date.now(); // the first of these jobs may be counted before the last is written
      await produce(FIRST, PRIORITIES);
      let most = 0;
      const watch = async <T>(what: string, probe: () => Promise<T | undefined>) =>
        until(what, async () => {
          most = Math.max(most, await replicas());
          return probe();
        }, 120_000);
      const activeS = await watch('the ScaledObject to be active', async () => ((await active()) ? since(lagAt) : undefined));
      const upS = await watch('replicas > 0', async () => ((await replicas()) > 0 ? since(lagAt) : undefined));
      const runningS = await watch('a consumer pod Running (kwok)', async () => ((await runningPods()) > 0 ? since(lagAt) : undefined));
      const wanted = Math.ceil((ACTIVATION - 2 + FIRST) / LAG_THRESHOLD);
      const partS = await watch(`${wanted} replicas`, async () => ((await replicas()) === wanted ? since(lagAt) : undefined));
      await new Promise((resolve) => setTimeout(resolve, 2 * HPA_SYNC_S * 1000));
      expect(await replicas(), `replicas for a lag of ${ACTIVATION - 2 + FIRST}`).toBe(wanted);
      expect(most).toBe(wanted);

      // ceil(153 / 21) = 8 pods wanted, more than the partitions: the HPA stops at maxReplicas.
      const burstAt = Date.now();
      await produce(BURST, PRIORITIES);
      const fullS = await watch(`${PARTITIONS} replicas`, async () => ((await replicas()) === PARTITIONS ? since(burstAt) : undefined));
      await new Promise((resolve) => setTimeout(resolve, 2 * HPA_SYNC_S * 1000));
      most = Math.max(most, await replicas());
      expect(most, 'never more replicas than partitions').toBe(PARTITIONS);
      const hpa = await get(`/apis/autoscaling/v2/namespaces/${NAMESPACE}/horizontalpodautoscalers/keda-hpa-img2img-consumer-${MODEL}`);
      expect(hpa?.spec).toMatchObject({ maxReplicas: PARTITIONS, metrics: [{ external: { target: { type: 'AverageValue', averageValue: String(LAG_THRESHOLD) } } }] });

      const drainStarted = Date.now();
      await drain();
      const goneAt = Date.now();
      const inactiveS = await until('the ScaledObject to be inactive', async () => ((await active()) ? undefined : since(goneAt)), 120_000);
      const zeroS = await until('replicas 0', async () => ((await replicas()) === 0 ? since(goneAt) : undefined), 120_000);
      const zeroAt = Date.now();
      // KEDA counts the cooldown from the last poll that found the model active (lag above the
      // activation threshold, so before the last jobs were consumed); it records that time, in seconds.
      const lastActive = Date.parse(String((await get(SCALED_OBJECT))?.status?.lastActiveTime));
      const quietS = (zeroAt - lastActive) / 1000;
      const times = {
        run,
        jobs: ACTIVATION - 2 + FIRST + BURST,
        lag_threshold: LAG_THRESHOLD,
        lag_to_active_s: activeS,
        lag_to_replicas_s: upS,
        lag_to_running_pod_s: runningS,
        [`lag_to_${wanted}_replicas_s`]: partS,
        burst_to_max_replicas_s: fullS,
        max_replicas: most,
        drain_s: Number(((goneAt - drainStarted) / 1000).toFixed(1)),
        lag_gone_to_inactive_s: inactiveS, // 0: inactive already, the lag having fallen under the activation threshold
        lag_gone_to_zero_s: zeroS,
        last_active_to_zero_s: Number(quietS.toFixed(1)),
        cooldown_s: COOLDOWN_S,
        polling_s: POLLING_S,
      };
      console.log(`[keda] ${JSON.stringify(times)}`);
      runs.push(times);
      expect(quietS, 'KEDA waits out the cooldown before zero').toBeGreaterThanOrEqual(COOLDOWN_S - 1);
    }
    console.log(`[keda] runs ${JSON.stringify(runs)}`);
  }, 900_000);
});
