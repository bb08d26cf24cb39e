// Global setup of the cluster suite: a fresh 3-node Kafka and 4-server MinIO on their own ports
// and state folder, stopped again at the end. The single-node servers are never touched.
import { rmSync } from 'node:fs';
import { STATE_DIR, infra } from './cluster.js';

export function setup(): void {
  infra('down', 'kafka', 'minio'); // what an interrupted run may have left
  rmSync(STATE_DIR, { recursive: true, force: true });
  const started = Date.now();
  infra('up', 'kafka', 'minio');
  console.log(`[cluster] 3 KRaft nodes and 4 MinIO servers up in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

export function teardown(): void {
  infra('down', 'kafka', 'minio');
}
