// Every validation rule of POST /api/diffusion with a bad input: a 4xx naming the field, in
// the one error shape, and nothing enqueued.
import { request } from 'node:http';
import { connect } from 'node:net';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyStore } from '../../common/keys.js';
import { PRIORITIES, jobTopic } from '../../common/topics.js';
import { jpegWithFrameSize, json, noisePng, pngHeaderOnly, pngImage, postJob, startTestApi, topicSize, type TestApi } from '../helpers/api.js';

let api: TestApi;
/** The Authorization header of the run with keys; none without. */
let keyHeader: Record<string, string> = {};

async function expectError(response: Response, status: number, field: string | undefined, code?: string) {
  const body = await json(response);
  expect({ status: response.status, field: body.error?.field }).toEqual({ status, field });
  expect(body.error.message).toEqual(expect.any(String));
  if (code) expect(body.error.code).toBe(code);
  expect(JSON.stringify(body)).not.toMatch(/at .*\.ts:\d+/); // never a stack trace
  return body.error as { code: string; message: string; field?: string };
}

const query = (extra: Record<string, string>) => ({ model_name: 'tiny', prompt: 'a lighthouse', ...extra });

async function formOf(): Promise<FormData> {
  const form = new FormData();
  form.append('image', new Blob([new Uint8Array(await pngImage(64, 48))], { type: 'image/png' }), 'input.png');
  return form;
}

/** A POST with headers exactly as given (a header twice stays twice), written to the socket by hand. */
function rawPost(url: string, headers: string[], body: Buffer): Promise<{ status: number; text: string }> {
  const { hostname, port, pathname, search } = new URL(url);
  const lines = [`POST ${pathname}${search} HTTP/1.1`, `Host: ${hostname}:${port}`, 'Connection: close', `Content-Length: ${body.length}`];
  for (let i = 0; i < headers.length; i += 2) lines.push(`${headers[i]}: ${headers[i + 1]}`);
  return new Promise((resolve, reject) => {
    // Written, not ended: a client that half-closes may lose its answer. Connection: close ends it.
    const socket = connect(Number(port), hostname, () => socket.write(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), body])));
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1]);
      const text = received.slice(received.indexOf('\r\n\r\n') + 4).replace(/^[0-9a-f]+\r\n|\r\n0\r\n\r\n$/g, '');
      resolve({ status, text });
    });
  });
}

/** Every hostile input below, once without keys and once with them on (each request with a valid key). */
for (const withKeys of [false, true]) {
  describe(withKeys ? 'with API keys' : 'without keys', () => {
    const realFetch = globalThis.fetch;
    beforeAll(async () => {
      const pepper = 'hostile-pepper-0123456789';
      api = await startTestApi(withKeys ? { AUTH: 'on', AUTH_PEPPER: pepper } : {});
      if (!withKeys) return;
      const { token } = await new KeyStore(api.services.store, pepper).create({ tenant: 'hostile', name: 'fuzz', role: 'user', limits: { rate: null, concurrency: null } });
      // Every request of the suite carries the key, whichever helper makes it.
      keyHeader = { Authorization: `Bearer ${token}` };
      globalThis.fetch = (input, init = {}) => realFetch(input, { ...init, headers: { ...(init.headers as Record<string, string>), ...keyHeader } });
    });
    afterAll(async () => {
      globalThis.fetch = realFetch;
      keyHeader = {};
      await api?.close();
    });
    hostileSuite();
  });
}

function hostileSuite() {
  describe('the image', () => {
    it('refuses an empty file', async () => {
      await expectError(await postJob(api.url, { image: new Uint8Array(0) }), 400, 'image');
    });

    it('refuses a missing image', async () => {
      await expectError(await postJob(api.url, { image: null, fields: { note: 'no image' } }), 400, 'image');
    });

    it('refuses a text file named .png, whatever its content type says', async () => {
      const text = new TextEncoder().encode('just some text, not a picture');
      await expectError(await postJob(api.url, { image: text, filename: 'photo.png', contentType: 'image/png' }), 415, 'image');
    });

    it('refuses SVG, GIF, TIFF and AVIF by their bytes', async () => {
      const svg = new TextEncoder().encode('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>');
      const base = sharp({ create: { width: 16, height: 16, channels: 3, background: 'red' } });
      const images = [svg, await base.clone().gif().toBuffer(), await base.clone().tiff().toBuffer(), await base.clone().avif().toBuffer()];
      for (const image of images) {
        const error = await expectError(await postJob(api.url, { image, filename: 'x.png' }), 415, 'image', 'unsupported_media_type');
        expect(error.message).toMatch(/png, jpeg or webp/);
      }
    });

    it('refuses a truncated PNG with 422', async () => {
      const whole = await noisePng(128, 128);
      const error = await expectError(await postJob(api.url, { image: whole.subarray(0, whole.length >> 1) }), 422, 'image');
      expect(error.message).toMatch(/truncated/);
    });

    it('refuses a PNG whose header declares 15000x15000 before decoding any pixel', async () => {
      const bomb = pngHeaderOnly(15000, 15000);
      expect(bomb.length).toBeLessThan(20_000);
      const error = await expectError(await postJob(api.url, { image: bomb }), 413, 'image', 'image_too_large');
      expect(error.message).toMatch(/15000x15000/);
    });

    it('refuses a side above MAX_IMAGE_SIDE even when the pixel count is fine', async () => {
      await expectError(await postJob(api.url, { image: pngHeaderOnly(5000, 8) }), 413, 'image', 'image_too_large');
    });

    it('refuses an image smaller than 8 pixels on a side', async () => {
      await expectError(await postJob(api.url, { image: await pngImage(7, 64) }), 422, 'image', 'image_too_small');
    });

    it('refuses a 64x64 JPEG whose frame header declares 1024x1024 with 422, and 4096x4096 with 413', async () => {
      const small = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#c04020' } }).jpeg().toBuffer();
      const error = await expectError(await postJob(api.url, { image: jpegWithFrameSize(small, 1024, 1024) }), 422, 'image', 'unprocessable');
      expect(error.message).toMatch(/cannot be decoded/);
      await expectError(await postJob(api.url, { image: jpegWithFrameSize(small, 4096, 4096) }), 413, 'image', 'image_too_large');
    });

    it('refuses a truncated JPEG and a truncated WebP with 422', async () => {
      const noise = sharp({ create: { width: 128, height: 128, channels: 3, background: '#000', noise: { type: 'gaussian', mean: 128, sigma: 40 } } });
      for (const whole of [await noise.clone().jpeg().toBuffer(), await noise.clone().webp().toBuffer()]) {
        await expectError(await postJob(api.url, { image: whole.subarray(0, whole.length - 200) }), 422, 'image');
      }
    });

    it('refuses an image over the model’s own pixel limit (tiny: 1 Mi pixels), naming the model', async () => {
      const error = await expectError(await postJob(api.url, { image: pngHeaderOnly(1024, 1032) }), 413, 'image', 'image_too_large');
      expect(error.message).toMatch(/model tiny takes at most 4096 pixels a side and 1048576 pixels in all/);
    });

    it('refuses a 4096x8 PNG, which the runner would have to enlarge to 32768x64 to compute', async () => {
      const error = await expectError(await postJob(api.url, { image: await pngImage(4096, 8) }), 422, 'image', 'image_too_narrow');
      expect(error.message).toMatch(/32768x64/);
    });
  });

  describe('the fields', () => {
    it.each(['../tiny', 'tiny/../x', 'TINY', 'nope', ''])('refuses the model name %j and lists the known ones', async (name) => {
      const error = await expectError(await postJob(api.url, { query: query({ model_name: name }) }), 400, 'model_name');
      expect(error.message).toMatch(/tiny/);
    });

    it.each(['urgent', '3', '-1', 'HIGH'])('refuses the priority %j', async (priority) => {
      await expectError(await postJob(api.url, { query: query({ priority }) }), 400, 'priority');
    });

    it('refuses a 20,000-character prompt, a blank one, a missing one and control characters', async () => {
      const long = 'x'.repeat(20_000);
      await expectError(await postJob(api.url, { query: query({ prompt: long }) }), 400, 'prompt');
      await expectError(await postJob(api.url, { query: { model_name: 'tiny' }, fields: { prompt: long } }), 400, 'prompt');
      await expectError(await postJob(api.url, { query: query({ prompt: '   ' }) }), 400, 'prompt');
      await expectError(await postJob(api.url, { query: { model_name: 'tiny' } }), 400, 'prompt');
      await expectError(await postJob(api.url, { query: query({ prompt: 'bell\u0007' }) }), 400, 'prompt');
      await expectError(await postJob(api.url, { query: query({ negative_prompt: 'esc\u001b[31m' }) }), 400, 'negative_prompt');
    });

    it.each([
      ['strength', '1.5'],
      ['strength', ''],
      ['strength', '0'],
      ['strength', '1e-1'],
      ['steps', '0x10'],
      ['steps', '1e1'],
      ['steps', ' 5'],
      ['steps', '+5'],
      ['guidance_scale', 'Infinity'],
      ['guidance_scale', '0x1'],
      ['seed', '1e3'],
      ['steps', '0'],
      ['steps', '151'],
      ['steps', '2.5'],
      ['guidance_scale', '31'],
      ['seed', '-1'],
      ['seed', '4294967296'],
      ['seed', 'abc'],
    ])('refuses %s=%j', async (field, value) => {
      await expectError(await postJob(api.url, { query: query({ [field]: value }) }), 400, field);
    });

    it('refuses steps × strength under one denoising step (the runner would refuse it), naming the field', async () => {
      const error = await expectError(await postJob(api.url, { query: query({ steps: '1', strength: '0.5' }) }), 400, 'strength');
      expect(error.message).toMatch(/at least 1 denoising step/);
      await expectError(await postJob(api.url, { query: query({ steps: '1' }) }), 400, 'steps'); // with tiny's default strength 0.6
    });

    it('refuses an Idempotency-Key that is not printable ASCII', async () => {
      await expectError(await postJob(api.url, { headers: { 'Idempotency-Key': 'caf\u00e9' } }), 400, 'Idempotency-Key');
    });

    it('refuses a field given in the query and the form with different values', async () => {
      const response = await postJob(api.url, { query: query({ priority: 'high' }), fields: { priority: 'low' } });
      await expectError(response, 400, 'priority');
    });

    it('refuses a body that is not multipart/form-data with 415', async () => {
      const response = await fetch(`${api.url}/api/diffusion?model_name=tiny&prompt=x`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      await expectError(response, 415, undefined, 'unsupported_media_type');
    });

    it('refuses a multipart body cut short with 400, and closes the connection', async () => {
      const body = '--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\nnot all of it';
      const response = await fetch(`${api.url}/api/diffusion?model_name=tiny&prompt=x`, {
        method: 'POST',
        headers: { 'content-type': 'multipart/form-data; boundary=b' },
        body,
      });
      expect(response.headers.get('connection')).toBe('close');
      const error = await expectError(response, 400, 'body', 'bad_request');
      expect(error.message).toMatch(/malformed/);
    });

    it('refuses an empty Idempotency-Key', async () => {
      await expectError(await postJob(api.url, { headers: { 'Idempotency-Key': '' } }), 400, 'Idempotency-Key');
    });

    it('refuses two Idempotency-Key headers (Node would join them into one new key)', async () => {
      const form = new Response(await formOf());
      const body = Buffer.from(await form.arrayBuffer());
      const headers = ['Content-Type', form.headers.get('content-type')!, 'Idempotency-Key', 'first', 'Idempotency-Key', 'second', ...Object.entries(keyHeader).flat()];
      const { status, text } = await rawPost(`${api.url}/api/diffusion?model_name=tiny&prompt=x`, headers, body);
      expect(status, text).toBe(400);
      expect(JSON.parse(text).error).toMatchObject({ field: 'Idempotency-Key', message: expect.stringMatching(/once/) });
    });

    it('refuses a prompt with a percent-escape that is not UTF-8, rather than storing "%FF" as text', async () => {
      const response = await fetch(`${api.url}/api/diffusion?model_name=tiny&prompt=caf%E9+%FF`, { method: 'POST', body: await formOf() });
      const error = await expectError(response, 400, 'prompt');
      expect(error.message).toMatch(/percent-encoding/);
    });

    it('refuses a prompt of zero-width and other invisible characters as blank', async () => {
      for (const prompt of ['\u200B\u200B', '\u200D \u2060', '\u00AD', '\uFEFF\u200E']) {
        await expectError(await postJob(api.url, { query: query({ prompt }) }), 400, 'prompt');
      }
    });

    it('refuses a body of more parts than it reads with 400 too_many_parts, not "image required"', async () => {
      const form = new FormData();
      for (let i = 0; i < 40; i++) form.append(`f${i}`, 'x');
      form.append('image', new Blob([new Uint8Array(await pngImage(64, 48))], { type: 'image/png' }), 'input.png');
      const response = await fetch(`${api.url}/api/diffusion?model_name=tiny&prompt=x`, { method: 'POST', body: form });
      const error = await expectError(response, 400, 'body', 'too_many_parts');
      expect(error.message).toMatch(/more than/);
    });
  });

  /** Sends the headers and a first chunk only, and resolves with the status and how much was sent by then. */
  function sendOversized(url: string, headers: Record<string, string>, chunkBytes: number, maxChunks: number) {
    return new Promise<{ status: number; sent: number; body: string }>((resolve, reject) => {
      const target = new URL('/api/diffusion?model_name=tiny&prompt=x', url);
      let sent = 0;
      let done = false;
      const req = request(target, { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=b', ...keyHeader, ...headers } }, (res) => {
        done = true;
        let body = '';
        res.on('data', (chunk: Buffer) => (body += chunk));
        res.on('end', () => {
          req.destroy();
          resolve({ status: res.statusCode!, sent, body });
        });
      });
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (done) return;
        // The server answered early and closed while we were still writing: the TCP reset can
        // discard its 413 before we read it. What counts is that it stopped taking the body.
        if (error.code === 'EPIPE' || error.code === 'ECONNRESET') {
          done = true;
          resolve({ status: 0, sent, body: '' });
        } else reject(error);
      });
      const chunk = Buffer.alloc(chunkBytes, 0x61);
      const pump = () => {
        if (done || sent >= chunkBytes * maxChunks) return;
        sent += chunk.length;
        if (req.write(chunk)) setImmediate(pump);
        else req.once('drain', pump);
      };
      pump();
    });
  }

  describe('the body limit', () => {
    it('answers 413 from Content-Length without reading the body', async () => {
      const declared = 100 * 1024 * 1024;
      const result = await sendOversized(api.url, { 'content-length': String(declared) }, 64 * 1024, 1);
      expect(result.status).toBe(413);
      expect(result.sent).toBe(64 * 1024); // the rest was never sent, so it was never read
      expect(JSON.parse(result.body).error.code).toBe('body_too_large');
    });

    it('lets a client that sends a body just over the limit read its 413 (the rest is drained, not reset)', async () => {
      const body = Buffer.alloc(api.config.MAX_BODY_BYTES + 1, 0x61);
      const response = await fetch(`${api.url}/api/diffusion?model_name=tiny&prompt=x`, {
        method: 'POST',
        headers: { 'content-type': 'multipart/form-data; boundary=b' },
        body,
      });
      expect(response.status).toBe(413);
      expect(response.headers.get('connection')).not.toBe('close');
      expect((await json(response)).error.code).toBe('body_too_large');
    });

    it('answers 413 to a chunked body as soon as it passes the limit', async () => {
      const max = api.config.MAX_BODY_BYTES;
      const result = await sendOversized(api.url, { 'transfer-encoding': 'chunked' }, 1024 * 1024, 200);
      expect([413, 0]).toContain(result.status); // 0: the connection was closed before the answer was read
      expect(result.sent).toBeLessThan(max * 2); // stopped long before the 200 MiB we were ready to send
    });
  });

  describe('after all that', () => {
    it('enqueued nothing', async () => {
      for (const priority of PRIORITIES) {
        expect(await topicSize(api.services.admin, jobTopic(api.config.TOPIC_PREFIX, 'tiny', priority))).toBe(0);
      }
    });
  });
}
