// Deployment: the Dockerfiles' shape, the Prometheus configs, and nginx/nginx.conf run by
// Debian's nginx in front of two real API processes: large uploads, unbuffered Server-Sent
// Events, replicas sharing their jobs. The compose files: compose.test.ts.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { connect } from 'node:net';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { allTopics } from '../../common/topics.js';
import { json, openEventStream, pngChunk } from '../helpers/api.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { answers, aptInstall, ChildService, ensureBinary, freePort, startApiProcess, type ApiProcess } from '../helpers/processes.js';

const MiB = 1024 * 1024;
const API_LIMIT = 20 * MiB; // MAX_BODY_BYTES's default
const PROXY_LIMIT = 21 * MiB; // client_max_body_size in nginx/nginx.conf

describe('Dockerfiles and Prometheus configs', () => {
  const stages = (dockerfile: string) => readFileSync(dockerfile, 'utf8').split('\n').filter((line) => /^FROM\s/i.test(line));
  const instructions = (dockerfile: string) => readFileSync(dockerfile, 'utf8').replace(/^\s*#.*$/gm, '');

  it('api/Dockerfile: multi-stage on Node 24, non-root, no Python or torch', () => {
    const text = instructions('api/Dockerfile');
    expect(stages('api/Dockerfile').length).toBeGreaterThanOrEqual(2);
    expect(text).toMatch(/ARG NODE_IMAGE=node:24[-\w.]*/);
    expect(text).toMatch(/^USER node$/m);
    expect(text).not.toMatch(/python|pip |torch|requirements\.txt/i);
    expect(text).toMatch(/npm ci --omit=dev/);
  });

  it('consumer/Dockerfile: multi-stage, non-root, Node plus a venv from diffusion-py/requirements.txt', () => {
    const text = instructions('consumer/Dockerfile');
    expect(stages('consumer/Dockerfile').length).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/ARG NODE_IMAGE=node:24[-\w.]*/);
    expect(text).toMatch(/^USER node$/m);
    expect(text).toMatch(/COPY diffusion-py\/requirements\.txt/);
    expect(text).toMatch(/python3 -m venv \/opt\/venv/);
    expect(text).toMatch(/RUNNER_PYTHON=\/opt\/venv\/bin\/python/);
  });

  const promtool = existsSync('/usr/bin/promtool') ? '/usr/bin/promtool' : undefined;
  it.skipIf(!promtool).each(['prometheus.yml', 'prometheus.docker.yml'])('%s passes promtool check config', (file) => {
    const result = spawnSync(promtool!, ['check', 'config', file], { encoding: 'utf8' });
    expect(result.status, result.stdout + result.stderr).toBe(0);
  });
});

// ---------------------------------------------------------------- nginx

const nginxBinary = ensureBinary('/usr/sbin/nginx', aptInstall('nginx'));

/**
 * nginx/nginx.conf for this machine: the two replicas instead of Docker's `api` name, a
 * loopback port instead of port 80, and temp paths of its own. Each swap must find its text.
 */
function nginxConfig(dir: string, port: number, replicas: number[]): string {
  let text = readFileSync('nginx/nginx.conf', 'utf8');
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((kind) => `    ${kind}_temp_path ${join(dir, kind)};`).join('\n');
  const swaps: [RegExp, string][] = [
    [/^(\s*)server api:8000 resolve;$/m, replicas.map((p) => `$1server 127.0.0.1:${p};`).join('\n')],
    [/^(\s*)listen 80;$/m, `$1listen 127.0.0.1:${port};`],
    [/access_log \/var\/log\/nginx\/access\.log /, `access_log ${join(dir, 'access.log')} `],
    [/^http \{$/m, `http {\n${temps}`],
  ];
  for (const [pattern, replacement] of swaps) {
    if (!pattern.test(text)) throw new Error(`nginx/nginx.conf no longer matches ${pattern}: update this test with it`);
    text = text.replace(pattern, replacement);
  }
  return text;
}

/** A multipart body of exactly `size` bytes whose `image` part is `image`, padded with random bytes. */
async function multipart(size: number | undefined, image?: Buffer): Promise<{ body: Buffer; type: string }> {
  const encode = async (bytes: Buffer) => {
    const form = new FormData();
    form.append('image', new Blob([new Uint8Array(bytes)], { type: 'image/png' }), 'input.png');
    const response = new Response(form);
    return { body: Buffer.from(await response.arrayBuffer()), type: response.headers.get('content-type')! };
  };
  if (image) return encode(image);
  const overhead = (await encode(Buffer.alloc(0))).body.length;
  return encode(randomBytes(size! - overhead));
}

/** A valid PNG whose upload is just under the API's limit: incompressible noise, stored uncompressed. */
/** A valid PNG just under the API's limit: 1024x1024 of noise (within tiny's pixel limit), a text chunk making up the rest. */
async function largestPng(): Promise<Buffer> {
  const png = await sharp(randomBytes(1024 * 1024 * 3), { raw: { width: 1024, height: 1024, channels: 3 } }).png({ compressionLevel: 0 }).toBuffer();
  const iend = png.length - 12; // the IEND chunk: length, type and CRC, no data
  const text = Buffer.alloc(API_LIMIT - 2048 - png.length - 12, 0x61);
  text.write('Comment\0');
  return Buffer.concat([png.subarray(0, iend), pngChunk('tEXt', text), png.subarray(iend)]);
}

describe.skipIf(!nginxBinary)('nginx/nginx.conf in front of two API replicas', () => {
  const config = testConfig({ TOPIC_PREFIX: uniqueName('nginx') });
  const replicas: ApiProcess[] = [];
  let nginx: ChildService | undefined;
  let proxy = '';
  let dir = '';

  beforeAll(async () => {
    const port = await freePort();
    // Same topics and bucket for both, as replicas of one deployment; fast heartbeats to watch the SSE stream.
    // The proxy passes the client's Host through; links may name it because ALLOWED_HOSTS lists it.
    const env = { TOPIC_PREFIX: config.TOPIC_PREFIX, SSE_HEARTBEAT_MS: '200', ALLOWED_HOSTS: `127.0.0.1:${port}` };
    replicas.push(...(await Promise.all([startApiProcess(env), startApiProcess(env)])));
    dir = mkdtempSync(join(tmpdir(), 'nginx-'));
    chmodSync(dir, 0o755); // nginx's workers (nobody) write their temp files under it
    writeFileSync(join(dir, 'nginx.conf'), nginxConfig(dir, port, replicas.map((r) => r.port)));
    const check = spawnSync(nginxBinary!, ['-t', '-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log'), '-g', `pid ${join(dir, 'nginx.pid')};`], { encoding: 'utf8' });
    expect(check.status, check.stderr).toBe(0);
    nginx = new ChildService('nginx', nginxBinary!, ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log'), '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`]);
    proxy = `http://127.0.0.1:${port}`;
    await nginx.until(() => answers(`${proxy}/nginx/healthz`), 15_000, 'answer on /nginx/healthz');
  }, 90_000);

  afterAll(async () => {
    await Promise.allSettled([nginx?.stop(), ...replicas.map((replica) => replica.service.stop())]);
    if (dir) rmSync(dir, { recursive: true, force: true });
    const kafka = createKafka(config, uniqueName('cleanup'));
    const admin = kafka.admin();
    await admin.connect();
    await admin.deleteTopics({ topics: allTopics(config.TOPIC_PREFIX, ['tiny']) }).catch(() => {});
    await admin.disconnect();
  }, 30_000);

  const submitUrl = (base: string) => `${base}/api/diffusion?model_name=tiny&prompt=a+lighthouse`;
  const post = (base: string, { body, type }: { body: Buffer; type: string }) =>
    fetch(submitUrl(base), { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': type } });

  it('passes a valid PNG of just under 20 MiB through to the API, which accepts it', async () => {
    const upload = await multipart(undefined, await largestPng());
    expect(upload.body.length).toBeLessThanOrEqual(API_LIMIT);
    expect(upload.body.length).toBeGreaterThan(API_LIMIT - 64 * 1024);
    const response = await post(proxy, upload);
    const body = await json(response);
    expect(response.status, JSON.stringify(body)).toBe(202);
    expect(body.status).toBe('queued');
  }, 60_000);

  it("lets the API answer its own JSON 413 for a body just over the API's 20 MiB", async () => {
    const response = await post(proxy, await multipart(API_LIMIT + 1));
    expect(response.status).toBe(413);
    expect(response.headers.get('content-type')).toMatch(/application\/json/);
    const { error } = await json(response);
    expect(error.code).toBe('body_too_large');
    expect(error.message).not.toContain('proxy'); // the API's words, not nginx's error page
  });

  it('streams uploads without buffering them: the API refuses an oversized body before it has arrived', async () => {
    // Headers announcing 20 MiB + 1 and only 1 KiB of the body: an nginx that buffered request
    // bodies would wait for the rest, and the API's answer could not come back.
    const { port } = new URL(proxy);
    const socket = connect(Number(port), '127.0.0.1');
    await once(socket, 'connect');
    let reply = '';
    socket.on('data', (chunk) => (reply += chunk));
    socket.write(
      `POST /api/diffusion?model_name=tiny&prompt=x HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
        `Content-Type: multipart/form-data; boundary=b\r\nContent-Length: ${API_LIMIT + 1}\r\n\r\n`,
    );
    socket.write(Buffer.alloc(1024, 'x'));
    try {
      const deadline = Date.now() + 5000;
      while (!/\r\n\r\n[\s\S]*\}/.test(reply) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(reply).toMatch(/^HTTP\/1\.1 413 /);
      expect(reply).toContain('body_too_large');
      expect(reply).not.toContain('proxy'); // the API's answer, not nginx's
    } finally {
      socket.destroy();
    }
  });

  it('refuses a body over 21 MiB itself, with JSON in the API’s error shape', async () => {
    const response = await post(proxy, await multipart(PROXY_LIMIT + 1));
    expect(response.status).toBe(413);
    expect(response.headers.get('content-type')).toMatch(/application\/json/);
    const { error } = await json(response);
    expect(error).toMatchObject({ code: 'body_too_large', message: expect.stringContaining('proxy') });
  });

  it('streams Server-Sent Events without buffering: events arrive while the stream is open', async () => {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#336699' } }).png().toBuffer();
    const accepted = await json(await post(proxy, await multipart(undefined, png)));
    // No consumer runs here, so the job stays queued and its stream stays open.
    const stream = await openEventStream(`${proxy}/api/jobs/${accepted.id}/events`);
    try {
      expect(stream.response.status).toBe(200);
      expect(stream.response.headers.get('content-type')).toMatch(/^text\/event-stream/);
      const snapshot = await stream.next(5000);
      expect(snapshot?.event).toBe('snapshot');
      expect(JSON.parse(snapshot!.data)).toMatchObject({ id: accepted.id, status: 'queued' });
      // Heartbeats are a few bytes every 200 ms: a buffering proxy would hold them back.
      const since = stream.comments.length;
      const deadline = Date.now() + 3000;
      while (stream.comments.length < since + 3 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      expect(stream.comments.length - since).toBeGreaterThanOrEqual(3);
    } finally {
      stream.close();
    }
  });

  it('serves a job submitted through one replica from the other, with links through the proxy', async () => {
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#996633' } }).png().toBuffer();
    const [first, second] = replicas;
    const direct = await post(first!.url, await multipart(undefined, png));
    expect(direct.status).toBe(202);
    const { id } = await json(direct);
    const fromSecond = await fetch(`${second!.url}/api/jobs/${id}`);
    expect(fromSecond.status).toBe(200);
    expect(await json(fromSecond)).toMatchObject({ id, status: 'queued' });

    const viaProxy = await json(await fetch(`${proxy}/api/jobs/${id}`));
    expect(viaProxy.status_url).toBe(`${proxy}/api/jobs/${id}`); // Host passed through, and allowed
  });

  it('spreads requests over both replicas, and keeps serving when one dies', async () => {
    for (let i = 0; i < 4; i++) expect((await fetch(`${proxy}/healthz`)).status).toBe(200);
    const upstreams = new Set([...readFileSync(join(dir, 'access.log'), 'utf8').matchAll(/upstream=127\.0\.0\.1:(\d+)/g)].map((m) => Number(m[1])));
    expect(upstreams).toEqual(new Set(replicas.map((r) => r.port)));

    await replicas[0]!.service.stop('SIGKILL');
    for (let i = 0; i < 4; i++) expect((await fetch(`${proxy}/healthz`)).status).toBe(200);
  });
});
