// Signed webhooks end to end: the API, a consumer with the `tiny` runner and the dispatcher
// in-process, real Kafka and MinIO, and real HTTP receivers on 127.0.0.1. Signatures are checked
// with the `standardwebhooks` package (the specification's reference implementation).
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DeliveryLogStore } from '../../common/deliveries.js';
import { newJobId } from '../../common/jobs.js';
import * as lifecycle from '../../common/lifecycle.js';
import { createLogger } from '../../common/logger.js';
import { jobKeys } from '../../common/storage.js';
import { TenantStore, tenantKey } from '../../common/tenants.js';
import { webhookRetryTopic, webhookRetryTopics } from '../../common/topics.js';
import { WebhookClient } from '../../dispatcher/client.js';
import { Courier } from '../../dispatcher/courier.js';
import type { Dispatcher } from '../../dispatcher/dispatcher.js';
import type { Consumer } from '../../consumer/consumer.js';
import { json, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { startTestConsumer, waitFor } from '../helpers/consumer.js';
import { uniqueName } from '../helpers/env.js';
import { dispatcherCaughtUp, Receiver, startTestDispatcher, type Received } from '../helpers/webhooks.js';

let api: TestApi;
let consumer: Consumer;
let dispatcher: Dispatcher;
const receivers: Receiver[] = [];

beforeAll(async () => {
  api = await startTestApi({ WEBHOOK_ALLOW_PRIVATE: '1' });
  consumer = await startTestConsumer({ ...api.config, IDLE_UNLOAD_MS: 0, SHUTDOWN_GRACE_MS: 2000 });
  // Links in webhook bodies name the API under test, as PUBLIC_BASE_URL makes them name a deployment.
  dispatcher = await startTestDispatcher(api.config, { PUBLIC_BASE_URL: api.url });
}, 120_000);

afterAll(async () => {
  await dispatcher?.stop();
  await consumer?.stop();
  await api?.services.admin.deleteTopics({ topics: webhookRetryTopics(api.config.TOPIC_PREFIX) }).catch(() => {});
  await api?.close();
  await Promise.all(receivers.map((receiver) => receiver.close()));
});

const receiver = async (answer?: ConstructorParameters<typeof Receiver>[0]) => {
  const started = await new Receiver(answer).start();
  receivers.push(started);
  return started;
};
const submit = async (fields: Record<string, string>) => {
  const response = await postJob(api.url, { fields });
  expect(response.status).toBe(202);
  return (await json(response)).id as string;
};
const deliveriesOf = async (id: string) => json(await fetch(`${api.url}/api/jobs/${id}/webhooks`));
const typeOf = (request: Received) => (JSON.parse(request.body) as { type: string }).type;
/** The dispatcher's samples of `name` whose labels include `labels`, summed (Prometheus text format). */
async function sampled(name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(dispatcher.metricsUrl()!)).text();
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) && wanted.every((pair) => line.includes(pair)))
    .reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
}

describe('signed webhooks', () => {
  it('delivers the chosen events, signed, with the job as GET /api/jobs/{id} shows it; progress at most once a second', async () => {
    const hooks = await receiver();
    const id = await submit({ webhook_url: hooks.url(), webhook_events: 'started,progress,succeeded', steps: '20', strength: '1' });
    await waitFor(async () => (hooks.about(id).some((r) => typeOf(r) === 'job.succeeded') ? true : undefined), 60_000, 'the succeeded webhook');

    const [secret] = await new TenantStore(api.services.store).webhookSecrets(null);
    const payloads = hooks.about(id).map((request) => new Webhook(secret!).verify(request.body, request.headers as Record<string, string>) as {
      type: string;
      timestamp: string;
      data: Record<string, unknown>;
    });
    const types = payloads.map((payload) => payload.type);
    expect(types[0]).toBe('job.started');
    expect(types.at(-1)).toBe('job.succeeded');
    expect(types).toContain('job.progress'); // the first progress event always goes; later ones a second apart
    for (const type of types) expect(['job.started', 'job.progress', 'job.succeeded']).toContain(type);
    const progress = payloads.filter((p) => p.type === 'job.progress').map((p) => Date.parse(p.timestamp));
    for (let i = 1; i < progress.length; i++) expect(progress[i]! - progress[i - 1]!).toBeGreaterThanOrEqual(1000);
    expect(new Set(hooks.about(id).map((r) => r.headers['webhook-id'])).size).toBe(payloads.length);

    const view = await json(await fetch(`${api.url}/api/jobs/${id}`));
    expect(payloads.at(-1)!.data).toEqual(view);
    expect(payloads.at(-1)!.data.result_url).toBe(`${api.url}/api/results/${id}`);
  });

  it('a receiver that answers 500 three times, then 200, gets one successful delivery per event; GET /webhooks lists every attempt', async () => {
    const hooks = await receiver((_request, index) => ({ status: index < 3 ? 500 : 200 }));
    const count = (status: string) => sampled('img2img_webhook_attempts_total', { event: 'succeeded', status });
    const before = { pending: await count('pending'), succeeded: await count('succeeded'), lag: await sampled('img2img_webhook_delivery_lag_seconds_count', { event: 'succeeded' }) };
    const retryTopics = [1, 2, 3].map((level) => webhookRetryTopic(api.config.TOPIC_PREFIX, level));
    const retriesBefore = await Promise.all(retryTopics.map((topic) => sampled('img2img_webhook_retries_total', { topic })));
    const id = await submit({ webhook_url: hooks.url() });
    await waitFor(async () => ((await deliveriesOf(id)).deliveries[0]?.status === 'succeeded' ? true : undefined), 60_000, 'the delivery to succeed');

    const requests = hooks.about(id);
    expect(requests.map((r) => r.status)).toEqual([500, 500, 500, 200]);
    expect(requests.map(typeOf)).toEqual(Array(4).fill('job.succeeded'));
    expect(new Set(requests.map((r) => r.headers['webhook-id'])).size).toBe(1); // the same message, retried

    const listed = await deliveriesOf(id);
    expect(listed.webhook).toEqual({ url: hooks.url(), events: ['succeeded', 'failed', 'canceled', 'aborted'] });
    expect(listed.deliveries).toHaveLength(1);
    const [delivery] = listed.deliveries;
    expect(delivery).toMatchObject({ id: requests[0]!.headers['webhook-id'], event: 'succeeded', status: 'succeeded', next_attempt_at: null });
    expect(delivery.attempts.map((a: { status_code: number }) => a.status_code)).toEqual([500, 500, 500, 200]);
    expect(delivery.attempts.map((a: { error: string | null }) => a.error)).toEqual(['HTTP 500', 'HTTP 500', 'HTTP 500', null]);
    for (const attempt of delivery.attempts) expect(Date.parse(attempt.at)).not.toBeNaN();

    await dispatcherCaughtUp(api.services.admin, api.config);
    expect(hooks.about(id)).toHaveLength(4);
    // The dispatcher's metrics count the same: three attempts that left a retry pending, one that delivered.
    expect(await count('pending')).toBe(before.pending + 3);
    expect(await count('succeeded')).toBe(before.succeeded + 1);
    expect(await sampled('img2img_webhook_delivery_lag_seconds_count', { event: 'succeeded' })).toBe(before.lag + 1);
    // One retry on each of the first three retry topics, and none waiting once it was delivered.
    expect(await Promise.all(retryTopics.map((topic) => sampled('img2img_webhook_retries_total', { topic })))).toEqual(retriesBefore.map((n) => n + 1));
    expect(await sampled('img2img_webhook_retry_backlog', {})).toBe(0);
  });

  it('a 410 Gone stops every later delivery of the job', async () => {
    const hooks = await receiver(() => ({ status: 410 }));
    const id = await submit({ webhook_url: hooks.url(), webhook_events: 'started,succeeded' });
    await waitFor(async () => ((await json(await fetch(`${api.url}/api/jobs/${id}`))).status === 'succeeded' ? true : undefined), 60_000, 'the job');
    await dispatcherCaughtUp(api.services.admin, api.config);

    expect(hooks.about(id).map(typeOf)).toEqual(['job.started']);
    const listed = await deliveriesOf(id);
    expect(listed.stopped_at).not.toBeNull();
    expect(listed.deliveries.map((d: { event: string; status: string }) => [d.event, d.status])).toEqual([['started', 'stopped']]);
  });

  it('does not follow a redirect: the loopback port it names never sees a connection', async () => {
    const elsewhere = await receiver();
    const hooks = await receiver((_request, index) => (index === 0 ? { status: 302, headers: { Location: elsewhere.url('/stolen') } } : { status: 410 }));
    const id = await submit({ webhook_url: hooks.url(), webhook_events: 'succeeded' });
    await waitFor(async () => ((await deliveriesOf(id)).stopped_at ? true : undefined), 60_000, 'the 410 after the redirect');

    expect(hooks.about(id).map((r) => r.status)).toEqual([302, 410]);
    expect(elsewhere.connections).toBe(0);
    const [delivery] = (await deliveriesOf(id)).deliveries;
    expect(delivery.attempts[0]).toMatchObject({ status_code: 302, error: 'HTTP 302: redirects are not followed' });
  });

  it('signs with both of a tenant’s secrets while one is rotated: the old and the new verify', async () => {
    const tenants = new TenantStore(api.services.store);
    const tenant = uniqueName('tenant').toLowerCase();
    const old = (await tenants.webhookSecrets(tenant))[0]!;
    const rotated = (await tenants.rotateSecret(tenant)).webhook_secrets;
    expect(rotated).toEqual([expect.stringMatching(/^whsec_/), old]);
    try {
      const hooks = await receiver();
      // A tenant's job, as the API makes it with a key: queued, then canceled (its ending is delivered).
      const { records, publisher } = api.services;
      const id = newJobId();
      const { record } = lifecycle.queued({
        id, model_name: 'tiny', priority: 'normal', width: 64, height: 64, input_key: jobKeys(id).input, idempotency: null, tenant,
        params: { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 },
        webhook: { url: hooks.url(), events: ['canceled'] },
      });
      await records.create(record);
      const { event } = await records.apply(id, (r) => lifecycle.cancel(r));
      await publisher.publishEvent(event!, AbortSignal.timeout(5000));
      await waitFor(async () => (hooks.about(id).length ? true : undefined), 30_000, 'the canceled webhook');

      const [request] = hooks.about(id);
      const headers = request!.headers as Record<string, string>;
      expect(headers['webhook-signature']!.split(' ')).toHaveLength(2);
      for (const secret of rotated) expect(new Webhook(secret).verify(request!.body, headers)).toMatchObject({ type: 'job.canceled', data: { id, status: 'canceled' } });
    } finally {
      await api.services.store.delete(tenantKey(tenant));
    }
  });
});

describe('addresses a webhook may not reach', () => {
  it('refuses 127.0.0.1 and [::1] at submission without WEBHOOK_ALLOW_PRIVATE; the receiver sees no connection', async () => {
    const hooks = await receiver();
    const strict = await startTestApi();
    try {
      for (const url of [hooks.url(), `http://[::1]:${hooks.port}/hook`, `http://localhost:${hooks.port}/hook`]) {
        const response = await postJob(strict.url, { fields: { webhook_url: url } });
        expect(response.status, url).toBe(400);
        expect((await json(response)).error).toMatchObject({ code: 'validation_error', field: 'webhook_url' });
      }
    } finally {
      await strict.close();
    }
    expect(hooks.connections).toBe(0);
  });

  it('a dispatcher without WEBHOOK_ALLOW_PRIVATE refuses a loopback target, by address or by a name resolving to one, without connecting', async () => {
    const hooks = await receiver();
    const store = api.services.store;
    const courier = new Courier({
      records: api.services.records,
      deliveries: new DeliveryLogStore(store),
      tenants: new TenantStore(store),
      // receiver.test resolves to the receiver's address: a name that points inside.
      client: new WebhookClient({ allowPrivate: false, resolve: async () => [{ address: '127.0.0.1', family: 4 }] }),
      baseUrl: api.url,
      retryBaseMs: 100,
      logger: createLogger('courier-test', 'silent'),
    });
    for (const url of [hooks.url(), `http://[::1]:${hooks.port}/hook`, `http://receiver.test:${hooks.port}/hook`]) {
      const id = newJobId();
      const { record } = lifecycle.queued({
        id, model_name: 'tiny', priority: 'normal', width: 64, height: 64, input_key: jobKeys(id).input, idempotency: null,
        params: { prompt: 'p', negative_prompt: null, strength: 0.6, steps: 10, guidance_scale: 7.5, seed: 1 },
        webhook: { url, events: ['canceled'] },
      });
      await api.services.records.create(record);
      const { event } = await api.services.records.apply(id, (r) => lifecycle.cancel(r));
      const delivery = await courier.fromEvent(event!);
      expect(await courier.attempt(delivery!), url).toBeUndefined(); // no retry: a refused address is final
      const [logged] = (await deliveriesOf(id)).deliveries;
      expect(logged, url).toMatchObject({ status: 'failed', attempts: [{ status_code: null, error: expect.stringMatching(/loopback/) }] });
    }
    expect(hooks.connections).toBe(0);
  });
});
