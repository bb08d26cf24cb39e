// Remote workers that fail: killed with SIGKILL mid-job, frozen (SIGSTOP) past their
// lease, a job canceled on a remote worker, a token revoked while its worker is connected.
// Every count ends with lost 0, duplicated 0; no job spends an attempt for a worker's fault.
import { WebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobRecord } from '../../common/jobs.js';
import { createKafka } from '../../common/kafka.js';
import { WorkerStore } from '../../common/workers.js';
import type { Consumer } from '../../consumer/consumer.js';
import { json, noisePng, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { startTestConsumer, waitFor, waitForStatus } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';
import { countOf, followEvents, report } from '../helpers/faults.js';
import { newWorker, removeWorker, WorkerProcess } from '../helpers/workers.js';

const ENDED = ['succeeded', 'failed', 'canceled'];

/** A 512x512 job of 12 steps: long enough on a CPU to be caught mid-run. */
async function submit(api: TestApi, seed: number, steps = 12): Promise<string> {
  const response = await postJob(api.url, {
    image: await noisePng(512, 512),
    query: { model_name: 'tiny', prompt: 'fault', seed: String(seed), steps: String(steps), strength: '1' },
  });
  expect(response.status).toBe(202);
  return (await json(response)).id as string;
}

/** Resolves once some job of `ids` reports a step: the workers are mid-job. */
const midJob = (api: TestApi, ids: string[]) =>
  waitFor(async () => {
    for (const id of ids) if ((await api.services.records.get(id))?.progress) return true;
    return undefined;
  }, 120_000, 'a job to make progress');

/** The WebSocket handshake's HTTP status for this token (101: let in). */
function handshake(url: string, token: string): Promise<number> {
  return new Promise((resolve) => {
    const socket = new WebSocket(url, { headers: { Authorization: `Bearer ${token}` } });
    socket.on('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
    socket.on('open', () => {
      socket.close();
      resolve(101);
    });
    socket.on('error', () => resolve(0));
  });
}

describe('remote workers that fail', () => {
  let api: TestApi;
  let consumer: Consumer;
  const workers: { id: string; token: string; process: WorkerProcess }[] = [];
  beforeAll(async () => {
    api = await startTestApi();
    consumer = await startTestConsumer(
      { ...api.config, RUNNER_LOCAL: 'off', WORKER_GATEWAY: 'on', WORKER_GATEWAY_PORT: 0, WORKER_LEASE_MS: 5000, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 1000 },
      'tiny\n',
    );
    for (const name of ['a', 'b', 'c']) {
      const { id, token } = await newWorker(api.services.store, `fault-${name}`);
      workers.push({ id, token, process: new WorkerProcess(consumer.gatewayUrl()!, token).start() });
    }
    await Promise.all(workers.map((w) => w.process.connected()));
  }, 180_000);
  afterAll(async () => {
    for (const w of workers) {
      w.process.kill('SIGCONT');
      w.process.kill();
      await removeWorker(api.services.store, w.id);
    }
    await consumer?.stop();
    await api?.close();
  });

  async function runThrough(name: string, fault: () => void): Promise<JobRecord[]> {
    const events = await followEvents(createKafka(api.config, uniqueName('workers')), api.config);
    const ids = await Promise.all([1, 2, 3, 4, 5, 6].map((seed) => submit(api, seed)));
    await midJob(api, ids);
    fault();
    const records: JobRecord[] = [];
    for (const id of ids) records.push(await waitForStatus(api.services.records, id, ENDED, 240_000));
    await waitFor(async () => (ids.every((id) => events.of(id, 'succeeded').length) ? true : undefined), 30_000, 'the endings');
    await events.stop();
    const count = countOf(ids.length, records, events.events);
    report(name, count, { attempts: records.map((r) => r.attempts).join(',') });
    expect(count).toMatchObject({ lost: 0, duplicated: 0, succeeded: ids.length });
    // A worker's fault spends no attempt.
    for (const record of records) expect(record.attempts).toBe(1);
    return records;
  }

  it('a worker killed with SIGKILL mid-job: its jobs run on the others, 0 lost, 0 duplicated', async () => {
    const killed = workers[0]!;
    const records = await runThrough('worker SIGKILL', () => killed.process.kill('SIGKILL'));
    for (const record of records) expect(record.worker).not.toBe(killed.id);
  }, 300_000);

  it('a worker frozen past its lease loses its jobs to the others, and reconnects when it thaws', async () => {
    const frozen = workers[1]!;
    const records = await runThrough('worker SIGSTOP past its lease', () => frozen.process.kill('SIGSTOP'));
    for (const record of records) expect(record.worker).not.toBe(frozen.id);
    frozen.process.kill('SIGCONT');
    await frozen.process.connected(2);
  }, 300_000);

  it('a cancel reaches a job on a remote worker', async () => {
    const id = await submit(api, 9, 150);
    await midJob(api, [id]);
    expect((await fetch(`${api.url}/api/jobs/${id}`, { method: 'DELETE' })).status).toBe(202);
    expect(await waitForStatus(api.services.records, id, ENDED)).toMatchObject({ status: 'canceled' });
  }, 120_000);

  it('a revoked token is refused: the connection dropped, the worker told no, an API key never let in', async () => {
    const revoked = workers[2]!;
    const started = Date.now();
    expect(await new WorkerStore(api.services.store).revoke(revoked.id)).toBe(true);
    expect(await revoked.process.exited()).toBe(3);
    const seconds = (Date.now() - started) / 1000;
    console.log(`[workers] revoked token: worker dropped and refused ${seconds.toFixed(1)} s after the revocation`);
    expect(await handshake(consumer.gatewayUrl()!, revoked.token)).toBe(401);
    expect(await handshake(consumer.gatewayUrl()!, 'i2i_AAAAAAAAAAAA_' + 'A'.repeat(43))).toBe(401);
    expect(await handshake(consumer.gatewayUrl()!, workers[1]!.token)).toBe(101);
  }, 120_000);
});
