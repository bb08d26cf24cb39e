// Object storage goes away at the end of a run, twice: the job still
// succeeds, and the outages spend none of its attempts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import type { Consumer } from '../../consumer/consumer.js';
import { json, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { pngOf, startTestConsumer, waitFor, waitForStatus } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';
import { countOf, followEvents, report, servers, sleep } from '../helpers/faults.js';

let api: TestApi;
let consumer: Consumer;

beforeAll(async () => {
  api = await startTestApi();
  // Two attempts only: before the fix, two outages were enough to fail the job.
  consumer = await startTestConsumer({ ...api.config, MAX_ATTEMPTS: 2, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 1000 });
}, 120_000);
afterAll(async () => {
  servers.start('minio'); // idempotent: up again whatever failed
  await consumer?.stop();
  await api?.close();
});

describe('object storage down at the end of a run', () => {
  it('retries without spending attempts, and the job succeeds once', async () => {
    const events = await followEvents(createKafka(api.config, uniqueName('fault')), api.config);
    const query = { model_name: 'tiny', prompt: 'fault', steps: '150', strength: '1', seed: '5' };
    const response = await postJob(api.url, { image: await pngOf(256, 256), query });
    expect(response.status).toBe(202);
    const { id } = await json(response);

    for (let outage = 0; outage < 2; outage++) {
      const since = events.events.length;
      // Half-way through this run: the outage then spans its end.
      await waitFor(async () => (events.events.slice(since).some((e) => e.id === id && e.type === 'progress' && e.step! * 2 >= e.total!) ? true : undefined), 120_000, `run ${outage + 1} half-way`);
      servers.stop('minio');
      await sleep(8000);
      servers.start('minio');
    }
    const record = await waitForStatus(api.services.records, id, ['succeeded', 'failed'], 180_000);
    await sleep(1000);
    await events.stop();
    const count = countOf(1, [record], events.events);
    report('storage down at the end of a run, twice', count, { attempts: record.attempts, error: record.error?.code ?? 'none' });
    expect(record).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect(count).toMatchObject({ lost: 0, duplicated: 0 });
  }, 300_000);
});
