// A consumer killed with SIGKILL mid-job: after a restart the job succeeds exactly
// once (one output, one succeeded event); SIGTERM exits cleanly; an idle runner stops,
// leaves a standby, and the next job runs on that standby.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { RecordStore } from '../../common/records.js';
import { jobKeys, ObjectStore } from '../../common/storage.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { ConsumerProcess, enqueue, prepareServers, readEvents, waitFor, waitForStatus } from '../helpers/consumer.js';

const config = testConfig();
const kafka = createKafka(config, uniqueName('crash-test'));
const store = new ObjectStore(config);
const records = new RecordStore(store);
// A short session so the dead consumer's partitions move quickly.
const env = { TOPIC_PREFIX: config.TOPIC_PREFIX, KAFKA_SESSION_TIMEOUT_MS: '6000', IDLE_UNLOAD_MS: '0' };
const consumers: ConsumerProcess[] = [];

beforeAll(async () => {
  await prepareServers(kafka, config, store);
});

afterAll(async () => {
  for (const consumer of consumers) await consumer.stop('SIGKILL');
});

describe('consumer crash', () => {
  it('finishes a job exactly once after the consumer is killed mid-job', async () => {
    const first = await new ConsumerProcess(env).start();
    consumers.push(first);
    await first.ready();
    const id = await enqueue(kafka, config, store, records, { size: 256, params: { steps: 60, strength: 1 } });
    await waitFor(async () => ((await records.get(id))?.progress?.step ?? 0) > 0 || undefined, 60_000, 'progress');
    const runnerPid = first.runnerPid();
    await first.stop('SIGKILL');
    if (runnerPid) process.kill(runnerPid, 'SIGKILL'); // as if the whole machine died

    const second = await new ConsumerProcess(env).start();
    consumers.push(second);
    const record = await waitForStatus(records, id, ['succeeded', 'failed'], 120_000);
    if (record.attempts !== 2) console.log(first.log, '\n=====\n', second.log, JSON.stringify(record));
    expect(record.status).toBe('succeeded');
    expect(record.attempts).toBe(2);
    expect(await store.getBytes(jobKeys(id).output)).toBeDefined();
    const seen = await readEvents(kafka, config, [id], (list) => list.some((e) => e.type === 'succeeded'));
    await new Promise((resolve) => setTimeout(resolve, 2000)); // a duplicate would arrive meanwhile
    const again = await readEvents(kafka, config, [id], (list) => list.filter((e) => e.type === 'succeeded').length > 1, 3000);
    expect(seen.filter((event) => event.type === 'succeeded')).toHaveLength(1);
    expect(again.filter((event) => event.type === 'succeeded')).toHaveLength(1);

    expect(await second.stop('SIGTERM')).toBe(0);
  });

  it('stops an idle runner, keeps a standby, and starts the next job on it; a shutdown takes the standby too', async () => {
    const consumer = await new ConsumerProcess({ ...env, IDLE_UNLOAD_MS: '1500' }).start();
    consumers.push(consumer);
    await consumer.ready();
    const first = await enqueue(kafka, config, store, records);
    await waitForStatus(records, first, ['succeeded']);
    const pid = consumer.runnerPid()!;
    await waitFor(async () => (processGone(pid) ? true : undefined), 20_000, 'the idle runner to exit');
    expect(consumer.log).toContain('idle: stopping the runner');
    // RUNNER_STANDBY is on by default: a standby (imports done, no model) waits for the next start.
    await waitFor(async () => (consumer.log.includes('runner standby spawned') ? true : undefined), 10_000, 'the standby');
    const standby = consumer.runnerPid()!;
    expect(standby).not.toBe(pid);
    expect(processGone(standby)).toBe(false);

    const second = await enqueue(kafka, config, store, records);
    const record = await waitForStatus(records, second, ['succeeded', 'failed'], 60_000);
    expect(record.status).toBe('succeeded');
    expect(consumer.log).toContain('runner started from its standby');
    expect(consumer.runnerPid()).toBe(standby); // the job ran on the standby, not on a new spawn
    // The cold start is measured and logged with the runner's ready line.
    expect(consumer.log).toMatch(/"start_seconds":\d/);

    // Idle again: another standby; SIGTERM ends it with the consumer.
    await waitFor(async () => (processGone(standby) && consumer.runnerPid() !== standby ? true : undefined), 20_000, 'the second unload and standby');
    const last = consumer.runnerPid()!;
    expect(await consumer.stop('SIGTERM')).toBe(0);
    await waitFor(async () => (processGone(last) ? true : undefined), 10_000, 'the standby to go with the consumer');
  });
});

function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}
