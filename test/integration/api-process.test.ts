// The API as its own process (api/main.ts, as `npm run api` starts it): it prints where Swagger
// UI is, serves, and on SIGTERM ends its SSE streams, finishes the requests in flight and exits 0.
import { spawn, type ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { allTopics } from '../../common/topics.js';
import { json, openEventStream, pngImage, postJob } from '../helpers/api.js';
import { testConfig } from '../helpers/env.js';

const config = testConfig();
let child: ChildProcess;
let url: string;
let output = '';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function formWithImage(): Promise<FormData> {
  const form = new FormData();
  form.append('image', new Blob([new Uint8Array(await pngImage(64, 48))], { type: 'image/png' }), 'input.png');
  return form;
}

/** Sends half the body now and the rest after `ms`; resolves with the status. */
function slowUpload(target: string, type: string, body: Buffer, ms: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const outgoing = request(target, { method: 'POST', headers: { 'Content-Type': type, 'Content-Length': String(body.length) } }, (incoming) => {
      incoming.resume();
      resolve(incoming.statusCode!);
    });
    outgoing.on('error', reject);
    outgoing.write(body.subarray(0, body.length >> 1));
    setTimeout(() => outgoing.end(body.subarray(body.length >> 1)), ms);
  });
}

const exited = () => new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', resolve)));

beforeAll(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  child = spawn(process.execPath, ['--import', 'tsx', 'api/main.ts'], {
    env: { ...process.env, TOPIC_PREFIX: config.TOPIC_PREFIX, API_PORT: String(port), LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk));
  for (let waited = 0; !(await fetch(`${url}/readyz`).then((r) => r.ok, () => false)); waited += 200) {
    if (waited > 30_000 || child.exitCode !== null) throw new Error(`the API did not become ready:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
});

afterAll(async () => {
  if (child.exitCode === null) child.kill('SIGKILL');
  const admin = createKafka(config, 'api-process-test').admin();
  await admin.connect();
  await admin.deleteTopics({ topics: allTopics(config.TOPIC_PREFIX, ['tiny']) }).catch(() => {});
  await admin.disconnect();
});

describe('api/main.ts', () => {
  it('logs the addresses of the web page and Swagger UI at start', () => {
    expect(output).toContain(`the web page at ${url}/, Swagger UI at ${url}/docs`);
  });

  it('on SIGTERM ends open SSE streams, lets an upload in progress finish with its 202, stops accepting, and exits 0', async () => {
    const { id } = await json(await postJob(url));
    const stream = await openEventStream(`${url}/api/jobs/${id}/events`);
    expect((await stream.next())?.event).toBe('snapshot');
    // An upload whose body is still arriving when the signal comes: Kafka must still be there for it.
    const form = new Response(await formWithImage());
    const body = Buffer.from(await form.arrayBuffer());
    const upload = slowUpload(`${url}/api/diffusion?model_name=tiny&prompt=rolling`, form.headers.get('content-type')!, body, 1500);
    await new Promise((resolve) => setTimeout(resolve, 500));

    child.kill('SIGTERM');
    expect(await upload).toBe(202);
    let event = await stream.next(10_000);
    while (event?.event === 'queued') event = await stream.next(10_000);
    expect(event).toBeUndefined(); // the server ended the stream
    expect(await exited()).toBe(0);
    await expect(fetch(`${url}/healthz`)).rejects.toThrow();
  });
});
