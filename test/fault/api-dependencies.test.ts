// The API against slow clients and sick dependencies, as its own process (a crash shows): a
// keyed upload that takes 30 s to arrive, Redis frozen, Kafka down. Each ends with its count
// and the answer times it measured.
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyStore } from '../../common/keys.js';
import { ObjectStore } from '../../common/storage.js';
import { json, noisePng, pngImage, postJob } from '../helpers/api.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { report, servers, sleep } from '../helpers/faults.js';
import { startApiProcess, type ApiProcess } from '../helpers/processes.js';
import { waitFor } from '../helpers/consumer.js';

const PEPPER = 'fault-pepper-0123456789';
const env = { AUTH: 'on', AUTH_PEPPER: PEPPER, S3_BUCKET: uniqueName('faultapi'), TOPIC_PREFIX: uniqueName('faultapi'), LOG_LEVEL: 'warn' };
let token: string;
let limitedToken: string;
let singleToken: string;
const apis: ApiProcess[] = [];

beforeAll(async () => {
  const store = new ObjectStore(testConfig(env));
  await store.ensureBucket();
  const keys = new KeyStore(store, PEPPER);
  token = (await keys.create({ tenant: 'acme', name: 'slow', role: 'user', limits: { rate: null, concurrency: null } })).token;
  const limited = { rate: { points: 1000, per_seconds: 60 }, concurrency: 1000 };
  limitedToken = (await keys.create({ tenant: 'acme', name: 'limited', role: 'user', limits: limited })).token;
  singleToken = (await keys.create({ tenant: 'acme', name: 'single', role: 'user', limits: { rate: null, concurrency: 1 } })).token;
}, 60_000);

afterAll(async () => {
  servers.resume('redis');
  servers.start('kafka');
  for (const api of apis) await api.service.stop('SIGKILL');
});

async function api(extra: Record<string, string> = {}): Promise<ApiProcess> {
  const started = await startApiProcess({ ...env, ...extra });
  apis.push(started);
  return started;
}

/** The multipart body of one job, as bytes. */
async function jobBody(image: Buffer): Promise<{ body: Buffer; type: string }> {
  const form = new FormData();
  form.append('image', new Blob([new Uint8Array(image)], { type: 'image/png' }), 'input.png');
  const response = new Response(form);
  return { body: Buffer.from(await response.arrayBuffer()), type: response.headers.get('content-type')! };
}

/** POSTs `body` in even pieces over `seconds`, as a client on a slow link does; resolves with the answer. */
function slowPost(url: string, bearer: string, { body, type }: { body: Buffer; type: string }, seconds: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const headers = { 'Content-Type': type, 'Content-Length': String(body.length), Authorization: `Bearer ${bearer}` };
    const outgoing = request(`${url}/api/diffusion?model_name=tiny&prompt=slow`, { method: 'POST', headers }, (incoming) => {
      let text = '';
      incoming.setEncoding('utf8');
      incoming.on('data', (chunk: string) => (text += chunk));
      incoming.on('end', () => resolve({ status: incoming.statusCode!, text }));
    });
    outgoing.on('error', reject);
    const pieces = 30;
    const size = Math.ceil(body.length / pieces);
    let sent = 0;
    const timer = setInterval(() => {
      outgoing.write(body.subarray(sent * size, (sent + 1) * size));
      if (++sent === pieces) {
        clearInterval(timer);
        outgoing.end();
      }
    }, (seconds * 1000) / pieces);
  });
}

const bearer = (value: string) => ({ Authorization: `Bearer ${value}` });

describe('a keyed upload that takes 30 s to arrive', () => {
  it('gets its 202, and the API stays up (the deadline starts once the body is read)', async () => {
    const started = Date.now();
    const { url, service } = await api();
    const body = await jobBody(await noisePng(400, 400)); // about 480 KB
    const answers = await Promise.all([30, 30, 12].map((seconds) => slowPost(url, token, body, seconds)));
    const statuses = answers.map((answer) => answer.status);
    const accepted = statuses.filter((status) => status === 202).length;
    const after = await postJob(url, { headers: bearer(token) });
    report('slow keyed uploads (30 s, 30 s, 12 s)', { submitted: 3, accepted, succeeded: 0, lost: 3 - accepted, duplicated: 0 }, {
      statuses: statuses.join(','),
      crashes: service.alive ? 0 : 1,
      seconds: Math.round((Date.now() - started) / 1000),
    });
    expect(statuses, answers.map((a) => a.text).join('\n')).toEqual([202, 202, 202]);
    expect(service.alive, service.tail()).toBe(true);
    expect(after.status).toBe(202);
  }, 90_000);
});

describe('Redis frozen (SIGSTOP)', () => {
  for (const policy of ['open', 'closed'] as const) {
    it(`answers every request of a limited key within the deadline, and /readyz says so (fail ${policy})`, async () => {
      const { url, service } = await api({ LIMITS_WHEN_REDIS_DOWN: policy });
      expect((await postJob(url, { headers: bearer(limitedToken) })).status).toBe(202);
      servers.pause('redis');
      const times: number[] = [];
      const statuses: number[] = [];
      let ready: { status: number; limits: string };
      try {
        await sleep(200);
        for (let i = 0; i < 6; i++) {
          const started = Date.now();
          const response = await postJob(url, { headers: bearer(limitedToken) });
          await response.body?.cancel();
          times.push(Date.now() - started);
          statuses.push(response.status);
        }
        const probe = await fetch(`${url}/readyz`);
        ready = { status: probe.status, limits: (await json(probe)).checks.limits };
      } finally {
        servers.resume('redis');
      }
      const accepted = statuses.filter((status) => status === 202).length;
      report(`Redis frozen, fail ${policy}`, { submitted: 6, accepted, succeeded: 0, lost: 0, duplicated: 0 }, {
        statuses: statuses.join(','),
        slowest_ms: Math.max(...times),
        readyz: ready.status,
      });
      expect(Math.max(...times)).toBeLessThan(4000);
      expect(statuses).toEqual(Array(6).fill(policy === 'open' ? 202 : 503));
      expect(ready).toMatchObject({ status: policy === 'open' ? 200 : 503, limits: expect.stringMatching(`fail ${policy}`) });
      expect(service.alive).toBe(true);
      // Redis back: limits count again.
      expect((await postJob(url, { headers: bearer(limitedToken) })).status).toBe(202);
    }, 60_000);
  }
});

describe('Redis restarted', () => {
  it('still counts the slot of a job queued before (the append-only file)', async () => {
    // Closed: while the client reconnects the answer is 503 (retried here), never a slot given away.
    const { url, service } = await api({ LIMITS_WHEN_REDIS_DOWN: 'closed' });
    expect((await postJob(url, { headers: bearer(singleToken) })).status).toBe(202);
    await sleep(1500); // the file is written every second
    servers.stop('redis');
    servers.start('redis');
    const answer = await waitFor(async () => {
      const response = await postJob(url, { headers: bearer(singleToken) });
      return response.status === 503 ? undefined : response; // the client reconnects within a second or two
    }, 20_000, 'an answer from the limits');
    const code = answer.status === 429 ? (await json(answer)).error.code : String(answer.status);
    report('Redis restarted with a job queued', { submitted: 2, accepted: answer.status === 202 ? 2 : 1, succeeded: 0, lost: 0, duplicated: 0 }, { second: code });
    expect(code).toBe('concurrency_limit');
    expect(service.alive).toBe(true);
  }, 60_000);
});

describe('Kafka down', () => {
  it('answers a submission 503 within 4.5 s (the queue ceiling reads Kafka under the same deadline)', async () => {
    const { url, service } = await api();
    expect((await postJob(url, { headers: bearer(token) })).status).toBe(202);
    servers.stop('kafka');
    const times: number[] = [];
    const statuses: number[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        const response = await postJob(url, { headers: bearer(token), image: await pngImage(64, 48 + i) });
        times.push(Date.now() - started);
        statuses.push(response.status);
        if (response.status === 503) expect((await json(response)).error.code).toBe('kafka_unavailable');
      }
    } finally {
      servers.start('kafka');
    }
    report('Kafka down', { submitted: 3, accepted: statuses.filter((s) => s === 202).length, succeeded: 0, lost: 0, duplicated: 0 }, {
      statuses: statuses.join(','),
      slowest_ms: Math.max(...times),
    });
    expect(statuses).toEqual([503, 503, 503]);
    expect(Math.max(...times)).toBeLessThan(4500);
    expect(service.alive).toBe(true);
  }, 120_000);
});
