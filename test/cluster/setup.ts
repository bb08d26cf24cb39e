// Global setup of the cluster suite: a fresh 3-node Kafka and 4-server MinIO on their own ports
// and state folder, and the Kubernetes control plane with KEDA where it is built (test/cluster/kube.ts),
// stopped again at the end. The single-node servers are never touched.
import { rmSync } from 'node:fs';
import { STATE_DIR, infra } from './cluster.js';
import { infraK8s, k8sWanted } from './kube.js';

export function setup(): void {
  infra('down', 'kafka', 'minio', 'k8s'); // what an interrupted run may have left
  rmSync(STATE_DIR, { recursive: true, force: true });
  let started = Date.now();
  infra('up', 'kafka', 'minio');
  console.log(`[cluster] 3 KRaft nodes and 4 MinIO servers up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (!k8sWanted()) {
    console.log(`[cluster] the Kubernetes tests are skipped: ${process.env.IMG2IMG_K8S === 'off' ? 'IMG2IMG_K8S=off' : 'the control plane is not built (scripts/infra install k8s, or IMG2IMG_K8S=on to build it here)'}`);
    return;
  }
  started = Date.now();
  infraK8s('up');
  console.log(`[cluster] Kubernetes control plane, kwok and KEDA up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

export function teardown(): void {
  infra('down', 'kafka', 'minio', 'k8s');
}
