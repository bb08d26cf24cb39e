// SIGKILL one of the four MinIO servers (8 drives, one erasure set) under a steady load
// of submissions, then start it again. The API writes through server 1 and the consumer through
// server 2; server 3 dies, taking 2 of the 8 drives and 1 of the 4 lock voters: quorum holds, so
// nothing accepted is lost, reads go on meanwhile, and every record reads whole from every server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ObjectStore } from '../../common/storage.js';
import { RecordStore } from '../../common/records.js';
import { jobKeys } from '../../common/storage.js';
import { sleep } from '../helpers/faults.js';
import { MINIO_NODES, minioEndpoint, nodes } from './cluster.js';
import { expectExactlyOnce, startSystem, underLoad, type System } from './scenario.js';

let system: System;
const VICTIM = 3;

beforeAll(async () => {
  system = await startSystem();
}, 240_000);
afterAll(async () => {
  await system?.stop();
});

const storeAt = (node: number) => new ObjectStore({ ...system.api.config, S3_ENDPOINT: minioEndpoint(node) });

/** Reads of finished jobs, through the API (server 1) and straight from each surviving server, until stop(). */
function readProbe(ids: string[]) {
  const tally = { api_reads_ok: 0, api_reads_failed: 0, direct_reads_ok: 0, direct_reads_failed: 0 };
  const direct = [1, 2, 4].map(storeAt);
  let running = true;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      const id = ids[i % ids.length]!;
      for (const path of [`/api/jobs/${id}`, `/api/results/${id}`]) {
        const ok = await fetch(`${system.api.url}${path}`, { signal: AbortSignal.timeout(10_000) })
          .then(async (r) => (await r.arrayBuffer(), r.ok))
          .catch(() => false);
        tally[ok ? 'api_reads_ok' : 'api_reads_failed']++;
      }
      const store = direct[i % direct.length]!;
      const ok = await store.get(jobKeys(id).output).then((o) => !!o && o.bytes.length > 0).catch(() => false);
      tally[ok ? 'direct_reads_ok' : 'direct_reads_failed']++;
      await sleep(200);
    }
  })();
  return { tally, stop: async () => ((running = false), await loop) };
}

describe('distributed MinIO, a server killed under load', () => {
  it('runs as one erasure set over four servers', async () => {
    const response = await fetch(`${minioEndpoint(1)}/minio/health/cluster`);
    expect(response.status).toBe(200);
    console.log(`[cluster] MinIO: 4 servers x 2 drives, write quorum ${response.headers.get('x-minio-write-quorum')} drives`);
    // Write quorum of 8 drives at the default parity (EC:4) is 5: two drives may go.
    expect(Number(response.headers.get('x-minio-write-quorum'))).toBeLessThanOrEqual(6);
  });

  it('loses nothing accepted, keeps reads working while quorum holds, and leaves no record half-written', async () => {
    let probe: ReturnType<typeof readProbe> | undefined;
    const result = await underLoad(system, {
      name: `MinIO: SIGKILL of server ${VICTIM} of ${MINIO_NODES}`,
      inject: async () => {
        const finished = system.events.events.filter((e) => e.type === 'succeeded').map((e) => e.id);
        nodes.kill(`minio-${VICTIM}`);
        probe = readProbe(finished);
        const quorum = await fetch(`${minioEndpoint(1)}/minio/health/cluster`, { signal: AbortSignal.timeout(10_000) })
          .then((r) => r.status)
          .catch(() => 0);
        return { victim: `minio-${VICTIM}`, cluster_health_after_kill: quorum };
      },
      restore: async () => {
        const reads = probe ? (await probe.stop(), probe.tally) : {};
        const restart_s = await nodes.start(`minio-${VICTIM}`);
        return { ...reads, restart_s: Math.round(restart_s * 10) / 10 };
      },
    });
    expectExactlyOnce(result);
    expect(probe!.tally.api_reads_failed + probe!.tally.direct_reads_failed).toBe(0);
    expect(probe!.tally.api_reads_ok).toBeGreaterThan(0);

    // Every accepted job's record, input and output read whole from every server, the restarted one included.
    const ids = result.submissions.filter((s) => s.status === 202).map((s) => s.id!);
    const broken: string[] = [];
    for (let node = 1; node <= MINIO_NODES; node++) {
      const store = storeAt(node);
      const records = new RecordStore(store);
      for (const id of ids) {
        const record = await records.get(id).catch((error: unknown) => `unreadable: ${String(error)}`);
        if (typeof record !== 'object' || record.status !== 'succeeded') broken.push(`server ${node} ${id}: record ${typeof record === 'string' ? record : record?.status}`);
        for (const key of [jobKeys(id).input, jobKeys(id).output]) {
          const object = await store.get(key).catch(() => undefined);
          if (!object?.bytes.length) broken.push(`server ${node} ${key}: missing`);
        }
      }
    }
    console.log(`[fault] MinIO: ${ids.length} jobs x (record, input, output) read back from each of ${MINIO_NODES} servers: ${broken.length} broken`);
    expect(broken).toEqual([]);
  }, 420_000);
});
