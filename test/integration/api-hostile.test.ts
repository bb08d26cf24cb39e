// Clients that try to exhaust a replica: uploads that declare 20 MB and send nothing, bodies
// past the upload memory budget, floods of made-up API keys. Each against the real servers.
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyStore } from '../../common/keys.js';
import { json, noisePng, postJob, startTestApi, type TestApi } from '../helpers/api.js';
import { uniqueName } from '../helpers/env.js';

const PEPPER = 'hostile-pepper-0123456789';
const MIB = 1024 * 1024;
let api: TestApi;
let token: string;
let keys: KeyStore;

beforeAll(async () => {
  api = await startTestApi({ AUTH: 'on', AUTH_PEPPER: PEPPER, S3_BUCKET: uniqueName('hostile'), UPLOAD_MEMORY_BYTES: String(2 * MIB), AUTH_FAILURES_PER_MINUTE: '20' });
  keys = new KeyStore(api.services.store, PEPPER);
  token = (await keys.create({ tenant: 'acme', name: 'honest', role: 'user', limits: { rate: null, concurrency: null } })).token;
}, 120_000);
afterAll(() => api?.close());

const bearer = (value: string) => ({ Authorization: `Bearer ${value}` });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Opens a connection that sends a job's headers, declaring `declared` bytes, and `sent` bytes of body; left open. */
function stalledUpload(declared: number, sent: number): Promise<Socket> {
  const { hostname, port } = new URL(api.url);
  const head =
    `POST /api/diffusion?model_name=tiny&prompt=x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n` +
    `Content-Type: multipart/form-data; boundary=b\r\nContent-Length: ${declared}\r\n\r\n` +
    '--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n';
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname, () => socket.write(head + 'x'.repeat(sent), () => resolve(socket)));
    socket.on('error', () => {});
  });
}

describe('upload memory', () => {
  it('is taken as bytes arrive: 20 uploads that declare 20 MB and send 1 KB hold 1 KB each, not 400 MB', async () => {
    // The budget here is 2 MiB: one buffer of the declared size could never fit.
    const sockets = await Promise.all(Array.from({ length: 20 }, () => stalledUpload(20 * MIB, 1024)));
    await sleep(500);
    const held = api.services.uploads.inUse;
    const response = await postJob(api.url, { headers: bearer(token) });
    for (const socket of sockets) socket.destroy();
    console.log(`[hostile] 20 stalled 20 MB uploads hold ${held} bytes of upload memory`);
    expect(held).toBeGreaterThan(0);
    expect(held).toBeLessThanOrEqual(20 * 1024);
    expect(response.status).toBe(202);
    await sleep(200);
    expect(api.services.uploads.inUse).toBe(0); // given back when the connections went
  });

  it('refuses an upload past the shared budget with 503 uploads_busy and Retry-After, and frees it after', async () => {
    const response = await postJob(api.url, { headers: bearer(token), image: await noisePng(1000, 1000) }); // about 3 MB
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after')).toBe('1');
    expect((await json(response)).error.code).toBe('uploads_busy');
    await sleep(200);
    expect(api.services.uploads.inUse).toBe(0);
    expect((await postJob(api.url, { headers: bearer(token) })).status).toBe(202);
  });
});

describe('made-up API keys', () => {
  it('cost one storage read per id, never push a known key out, and past the limit get 429 without a read', async () => {
    const reads = { count: 0 };
    const get = api.services.store.get.bind(api.services.store);
    api.services.store.get = (key, signal) => {
      if (key.startsWith('auth/keys/')) reads.count++;
      return get(key, signal);
    };
    try {
      expect((await postJob(api.url, { headers: bearer(token) })).status).toBe(202); // known from here on
      const guess = (i: number) => `i2i_${String(i).padStart(12, 'Z')}_${'a'.repeat(43)}`;
      // The same unknown id five times at once: one read.
      const same = await Promise.all(Array.from({ length: 5 }, () => fetch(`${api.url}/api/jobs/AAAAAAAAAAAAAAAAAAAAAA`, { headers: bearer(guess(1)) })));
      expect(same.map((r) => r.status)).toEqual(Array(5).fill(401));
      expect(reads.count).toBe(1);
      // More failures from this address than the limit (20 a minute): then 429, and no read.
      const statuses: number[] = [];
      for (let i = 2; i < 40; i++) statuses.push((await fetch(`${api.url}/api/jobs/AAAAAAAAAAAAAAAAAAAAAA`, { headers: bearer(guess(i)) })).status);
      const limited = await fetch(`${api.url}/api/jobs/AAAAAAAAAAAAAAAAAAAAAA`, { headers: bearer(guess(99)) });
      expect(limited.status).toBe(429);
      expect((await json(limited)).error).toMatchObject({ code: 'auth_failures', field: 'Authorization' });
      console.log(`[hostile] 39 made-up keys: ${reads.count} key reads, statuses ${[...new Set(statuses)].join(',')}`);
      expect(statuses.filter((s) => s === 401).length).toBe(15); // 20 failures a minute: 5 above, 15 here
      expect(reads.count).toBe(16);
      // The honest key still passes from the same address, without a read.
      expect((await postJob(api.url, { headers: bearer(token) })).status).toBe(202);
      expect(reads.count).toBe(16);
    } finally {
      api.services.store.get = get;
    }
  });
});
