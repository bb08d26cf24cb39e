// Queue positions and estimated times with real Kafka and MinIO: jobs queued behind a slow
// stand-in runner (one batch of one at a time, two seconds each; the first job longer) get exact
// positions that fall as the queue drains, on GET and on the event stream; GET /api/models
// splits the depth into queued and running and gives the measured rate.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Consumer } from '../../consumer/consumer.js';
import { jobTopic } from '../../common/topics.js';
import { json, openEventStream, pngImage, postJob, readTopic, startTestApi, type TestApi } from '../helpers/api.js';
import { startTestConsumer, waitFor } from '../helpers/consumer.js';

// 64x64 at 10 steps and strength 0.6 (6 denoising steps): two seconds a job, one at a time
// (long enough for each position to be seen while the tests beside this one load the machine).
const STANDIN = 'standin:{"per_batch_ms":{"1":2000},"width":64,"height":64,"denoise_steps":6}';
const QUEUED = 5;

let api: TestApi;
let consumer: Consumer;

beforeAll(async () => {
  api = await startTestApi();
  consumer = await startTestConsumer({ ...api.config, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 2000 }, `tiny ${STANDIN}\n`);
}, 120_000);

afterAll(async () => {
  await consumer?.stop();
  await api?.close();
});

interface View {
  id: string;
  status: string;
  status_url: string;
  events_url: string;
  queue_position: number | null;
  estimated_start_at: string | null;
  estimated_finish_at: string | null;
}

const submit = async ({ priority = 'normal', ...fields }: Record<string, string> = {}) => {
  const query = { model_name: 'tiny', prompt: 'a lighthouse', priority };
  const response = await postJob(api.url, { image: await pngImage(64, 64), query, fields: { steps: '10', strength: '0.6', ...fields } });
  expect(response.status).toBe(202);
  return (await json(response)) as View;
};
const view = async (job: View) => (await json(await fetch(job.status_url))) as View;
const models = async () => ((await json(await fetch(`${api.url}/api/models`))).models as { name: string; queued: number; running: number; queue_depth: { total: number }; rate: { jobs_per_second: number; mean_run_s: number | null } | null }[])[0]!;

/** The distinct values in the order seen. */
const changes = (values: number[]) => values.filter((value, index) => index === 0 || value !== values[index - 1]);

describe('queue position and estimated times', () => {
  it('gives jobs behind a slow runner exact positions that fall as the queue drains', async () => {
    const began = Date.now();
    // The blocker: 30 denoising steps, ten seconds, while the others are submitted and read.
    const blocker = await submit({ steps: '30', strength: '1' });
    await waitFor(async () => ((await view(blocker)).status === 'running' ? true : undefined), 60_000, 'the first job to start');
    const jobs: View[] = [];
    for (let i = 0; i < QUEUED; i++) jobs.push(await submit());

    // Each job's record knows where its message is.
    const topic = jobTopic(api.config.TOPIC_PREFIX, 'tiny', 'normal');
    const messages = await readTopic(api.config, topic, (read) => jobs.every((job) => read.some((m) => m.key === job.id)));
    for (const job of jobs) {
      const record = await api.services.records.get(job.id);
      const message = messages.find((m) => m.key === job.id)!;
      expect(record?.queue).toEqual({ topic, partition: message.partition, offset: message.offset });
    }

    // Exact while nothing ends: the blocker runs ahead of all of them, and each earlier job is ahead of the later ones.
    // (The runner takes a second job beside the one it computes, and may start it: running ones count as ahead too.)
    const first = await Promise.all(jobs.map(view));
    expect(first.slice(1).map((j) => j.status)).toEqual(jobs.slice(1).map(() => 'queued'));
    expect(first.map((j) => j.queue_position)).toEqual(first.map((j, i) => (j.status === 'queued' ? i + 1 : null)));
    // The depth is read at most once a second: the submissions' own reads may still be cached.
    const depth = await waitFor(async () => ((m) => (m.queue_depth.total === QUEUED + 1 ? m : undefined))(await models()), 5000, 'the depth');
    expect(depth.queued + depth.running).toBe(QUEUED + 1);

    // The last job's stream tells its position as it changes.
    const last = jobs.at(-1)!;
    const stream = await openEventStream(last.events_url);
    const snapshot = await stream.next(10_000);
    expect(snapshot?.event).toBe('snapshot');
    expect(JSON.parse(snapshot!.data).queue_position).toBe(QUEUED);
    const streamed: number[] = [];
    const following = (async () => {
      for (let event = await stream.next(60_000); event; event = await stream.next(60_000)) {
        if (event.event === 'queued') {
          const update = JSON.parse(event.data);
          if (update.queue_position !== undefined) streamed.push(update.queue_position);
        }
        if (event.event === 'started') return;
      }
    })();

    // Polled until each has started: the positions seen only fall, and the times appear once a rate is measured.
    const seen = new Map<string, number[]>(first.filter((j) => j.status === 'queued').map((j) => [j.id, [j.queue_position!]]));
    let estimated: View | undefined;
    let measured: Awaited<ReturnType<typeof models>>['rate'] = null;
    let sawRunning = false;
    await waitFor(
      async () => {
        const views = await Promise.all(jobs.map(view));
        for (const current of views.filter((v) => v.status === 'queued')) {
          expect(current.queue_position).not.toBeNull();
          seen.get(current.id)?.push(current.queue_position!);
          if (current.estimated_start_at && current.queue_position! > 0) estimated = current;
        }
        for (const current of views.filter((v) => v.status !== 'queued')) expect(current.queue_position).toBeNull();
        const model = await models();
        measured = model.rate ?? measured;
        sawRunning ||= model.running > 0;
        return views.every((v) => v.status !== 'queued') ? true : undefined;
      },
      90_000,
      'every job to start',
    );
    await following;
    stream.close();

    for (const [id, positions] of seen) {
      const distinct = changes(positions);
      // The runner holds two jobs, one computing and one waiting for it: a job two from the front may start at its next change.
      if (positions[0]! > 2) expect(distinct.length, `job ${id}: ${positions.join(',')}`).toBeGreaterThan(1);
      for (let i = 1; i < distinct.length; i++) expect(distinct[i], `job ${id}: ${positions.join(',')}`).toBeLessThan(distinct[i - 1]!);
    }
    // At most one update a second, each a new position, falling.
    expect(streamed.length).toBeGreaterThan(1);
    for (let i = 1; i < streamed.length; i++) expect(streamed[i]).toBeLessThan(streamed[i - 1]!);

    expect(sawRunning).toBe(true);
    expect(measured).not.toBeNull();
    expect(measured!.jobs_per_second).toBeGreaterThan(0);
    expect(estimated).toBeDefined();
    const { estimated_start_at, estimated_finish_at } = estimated!;
    expect(Date.parse(estimated_finish_at!)).toBeGreaterThan(Date.parse(estimated_start_at!));
    console.log(`queue positions: ${QUEUED} jobs behind a blocker drained in ${((Date.now() - began) / 1000).toFixed(1)} s`);
  }, 150_000);

  it('puts higher priorities ahead, whenever they came, and lower ones behind', async () => {
    const began = Date.now();
    const blocker = await submit({ steps: '30', strength: '1' });
    await waitFor(async () => ((await view(blocker)).status === 'running' ? true : undefined), 60_000, 'the first job to start');
    const [normal1, normal2] = [await submit(), await submit()];
    const low = await submit({ priority: 'low' });
    const high = await submit({ priority: 'high' });
    // The offsets are read at most once a second: a reading from before the submissions would miss them.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const [n1, n2, l, h] = await Promise.all([normal1, normal2, low, high].map((job) => view(job!)));
    // Ahead of each: the high job (until it ends: the runner lets it overtake the blocker, so it
    // may have ended already), the normal jobs before it (the blocker among them), running or not.
    // The four views share one reading of the offsets (cached for a second): they agree.
    const ahead = n2!.queue_position! - 2;
    expect([0, 1]).toContain(ahead);
    if (n1!.status === 'queued') expect(n1!.queue_position).toBe(ahead + 1);
    expect(l!.queue_position).toBe(ahead + 3);
    if (h!.status === 'queued') expect(h!.queue_position).toBe(0); // (the consumer hands a higher job over at once, beside the others)
    await waitFor(async () => ((await view(low)).status === 'succeeded' ? true : undefined), 90_000, 'the low job to end');
    console.log(`queue positions by priority: ${((Date.now() - began) / 1000).toFixed(1)} s`);
  }, 150_000);
});
