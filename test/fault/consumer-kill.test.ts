// A consumer killed with SIGKILL under load: its partitions move to the
// surviving member within seconds, and every accepted job succeeds exactly once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobRecord } from '../../common/jobs.js';
import { createKafka } from '../../common/kafka.js';
import { jobTopic } from '../../common/topics.js';
import { json, postJob, readTopic, startTestApi, type TestApi } from '../helpers/api.js';
import { ConsumerProcess, pngOf, waitForStatus } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';
import { countOf, followEvents, report } from '../helpers/faults.js';

let api: TestApi;
const consumers: ConsumerProcess[] = [];

beforeAll(async () => {
  api = await startTestApi();
}, 120_000);
afterAll(async () => {
  for (const consumer of consumers) await consumer.stop('SIGKILL');
  await api?.close();
});

async function submit(seed: number): Promise<string> {
  const response = await postJob(api.url, { image: await pngOf(64, 64, seed), query: { model_name: 'tiny', prompt: 'kill', seed: String(seed) } });
  expect(response.status).toBe(202);
  return (await json(response)).id as string;
}

describe('a consumer killed under load', () => {
  it('hands its partitions to the survivor within seconds; nothing is lost or run twice to the user', async () => {
    const env = { TOPIC_PREFIX: api.config.TOPIC_PREFIX, IDLE_UNLOAD_MS: '0' };
    const [victim, survivor] = await Promise.all([await new ConsumerProcess(env).start(), await new ConsumerProcess(env).start()]);
    consumers.push(victim, survivor);
    await Promise.all([victim.ready(), survivor.ready()]);
    const events = await followEvents(createKafka(api.config, uniqueName('fault')), api.config);
    // Both members serve: every partition has had a job through it.
    const warm = await Promise.all(Array.from({ length: 12 }, (_, i) => submit(i)));
    for (const id of warm) await waitForStatus(api.services.records, id, ['succeeded'], 120_000);

    const killedAt = Date.now();
    await victim.stop('SIGKILL');
    const ids = await Promise.all(Array.from({ length: 30 }, (_, i) => submit(100 + i)));
    const records: JobRecord[] = [];
    for (const id of ids) records.push(await waitForStatus(api.services.records, id, ['succeeded', 'failed'], 120_000));

    // Per partition, the first job started after the kill: the slowest partition is the recovery time.
    const messages = await readTopic(api.config, jobTopic(api.config.TOPIC_PREFIX, 'tiny', 'normal'), (m) => ids.every((id) => m.some((x) => x.key === id)));
    const partitionOf = new Map(messages.map((m) => [m.key, m.partition]));
    const firstStart = new Map<number, number>();
    for (const record of records) {
      const partition = partitionOf.get(record.id)!;
      const started = Date.parse(record.started_at!);
      firstStart.set(partition, Math.min(firstStart.get(partition) ?? Infinity, started));
    }
    const recovery = (Math.max(...firstStart.values()) - killedAt) / 1000;
    await events.stop();
    const count = countOf(ids.length, records, events.events);
    report('consumer SIGKILL under load', count, { partitions: firstStart.size, seconds_to_serve_every_partition: recovery.toFixed(1) });
    expect(count).toMatchObject({ succeeded: ids.length, lost: 0, duplicated: 0 });
  }, 300_000);
});
