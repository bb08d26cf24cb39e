// A dispatcher killed with SIGKILL while a delivery waits for its retry loses nothing: the retry
// sits in a Kafka retry topic and the attempts in object storage, so the next dispatcher of the
// group sends it when it is due. The dispatcher runs as its own process (dispatcher/main.ts) here.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { webhookRetryTopics } from '../../common/topics.js';
import type { Consumer } from '../../consumer/consumer.js';
import { json, postJob, startTestApi, topicSize, type TestApi } from '../helpers/api.js';
import { startTestConsumer, waitFor } from '../helpers/consumer.js';
import type { ChildService } from '../helpers/processes.js';
import { dispatcherProcess, Receiver } from '../helpers/webhooks.js';

let api: TestApi;
let consumer: Consumer;
let receiver: Receiver | undefined;
const dispatchers: ChildService[] = [];

beforeAll(async () => {
  api = await startTestApi({ WEBHOOK_ALLOW_PRIVATE: '1' });
  consumer = await startTestConsumer({ ...api.config, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 2000 });
}, 120_000);

afterAll(async () => {
  for (const dispatcher of dispatchers) await dispatcher.stop('SIGKILL');
  await consumer?.stop();
  await api?.services.admin.deleteTopics({ topics: webhookRetryTopics(api.config.TOPIC_PREFIX) }).catch(() => {});
  await api?.close();
  await receiver?.close();
});

async function startDispatcher(): Promise<ChildService> {
  const dispatcher = dispatcherProcess(api.config, { PUBLIC_BASE_URL: api.url, WEBHOOK_RETRY_BASE_MS: '300' });
  dispatchers.push(dispatcher);
  await dispatcher.until(async () => dispatcher.log.includes('webhook dispatcher running'), 60_000, 'start');
  return dispatcher;
}

const deliveriesOf = async (id: string) => (await json(await fetch(`${api.url}/api/jobs/${id}/webhooks`))).deliveries as {
  status: string;
  attempts: { status_code: number | null }[];
}[];

it('a dispatcher killed with SIGKILL mid-retry loses no delivery: the next one resumes it', async () => {
  let healthy = false;
  receiver = await new Receiver(() => ({ status: healthy ? 200 : 500 })).start();
  const first = await startDispatcher();

  const response = await postJob(api.url, { fields: { webhook_url: receiver.url() } });
  expect(response.status).toBe(202);
  const { id } = await json(response);
  // Mid-retry: an attempt failed, is recorded, and its retry waits in a retry topic.
  const retries = async () => (await Promise.all(webhookRetryTopics(api.config.TOPIC_PREFIX).map((t) => topicSize(api.services.admin, t)))).reduce((a, b) => a + b);
  await waitFor(async () => ((await deliveriesOf(id))[0]?.status === 'pending' && (await retries()) > 0 ? true : undefined), 60_000, 'a failed attempt and its retry');
  await first.stop('SIGKILL');
  const failedBefore = receiver.about(id).length;
  expect(failedBefore).toBeGreaterThan(0);

  healthy = true;
  await startDispatcher();
  await waitFor(async () => ((await deliveriesOf(id))[0]?.status === 'succeeded' ? true : undefined), 90_000, 'the resumed delivery');

  const requests = receiver.about(id);
  // The same message all along; a receiver dedupes on webhook-id. A kill between a send and its
  // commit may repeat a delivery (at least once), never lose one.
  expect(new Set(requests.map((r) => r.headers['webhook-id'])).size).toBe(1);
  expect(requests.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(1);
  expect(requests.slice(0, failedBefore).every((r) => r.status === 500)).toBe(true);
  const [delivery] = await deliveriesOf(id);
  expect(delivery!.attempts.at(-1)!.status_code).toBe(200);
  expect(delivery!.attempts.slice(0, failedBefore).map((a) => a.status_code)).toEqual(Array(failedBefore).fill(500));
});
