// The batch client's retries against a small real HTTP server that answers what a busy or
// refusing API answers: 429/503 with Retry-After are waited out, other refusals are final.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getJob, submitImage, type Client } from '../../scripts/batch/client.js';
import { parseOptions, program } from '../../scripts/batch/options.js';
import { HttpError } from '../../scripts/batch/retry.js';
import { runBatch } from '../../scripts/batch/run.js';

interface Answer {
  status: number;
  headers?: Record<string, string>;
  body: unknown;
}

const ID = 'q0vN3rJ8T6yWm1bXc2dEfA';
let server: Server;
let base: string;
let script: Answer[] = [];
let seen: { method: string; key: string | undefined; at: number }[] = [];

const job = (status: string) => ({
  id: ID,
  status,
  model_name: 'tiny',
  priority: 'normal',
  status_url: `${base}/api/jobs/${ID}`,
  result_url: `${base}/api/results/${ID}`,
  events_url: `${base}/api/jobs/${ID}/events`,
});
const error = (code: string, message: string, field?: string) => ({ error: { code, message, ...(field ? { field } : {}) } });

beforeAll(async () => {
  server = createServer((request: IncomingMessage, response: ServerResponse) => {
    request.resume().on('end', () => {
      seen.push({ method: request.method!, key: request.headers['idempotency-key'] as string | undefined, at: Date.now() });
      const answer = script.shift() ?? { status: 500, body: error('internal_error', 'no answer scripted') };
      const text = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body);
      response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers }).end(text);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

function client(notices: string[] = [], tries = 4): Client {
  return {
    fetch,
    api: base,
    retry: { tries, minDelayMs: 10, maxDelayMs: 20, maxRetryAfterMs: 5000 },
    notice: (err, attempt, waitMs) => notices.push(`${String(err)} #${attempt} ${waitMs}`),
  };
}

const submit = (api: Client) => submitImage(api, { bytes: new Uint8Array([1, 2, 3]), filename: 'sub/a.png' }, { model_name: 'tiny', prompt: 'x' }, 'key-1');

describe('batch client retries', () => {
  it('waits out 429 and 503 for their Retry-After, with the same Idempotency-Key, then takes the job', async () => {
    seen = [];
    const soon = new Date(Date.now() + 1000).toUTCString(); // HTTP dates have whole seconds: 0..1 s from now
    script = [
      { status: 429, headers: { 'retry-after': '1' }, body: error('rate_limited', 'slow down') },
      { status: 503, headers: { 'retry-after': soon }, body: error('kafka_unavailable', 'the queue (Kafka) is unavailable; retry later') },
      { status: 202, body: job('queued') },
    ];
    const notices: string[] = [];
    const accepted = await submit(client(notices));
    expect(accepted.id).toBe(ID);
    expect(seen.map((request) => [request.method, request.key])).toEqual([['POST', 'key-1'], ['POST', 'key-1'], ['POST', 'key-1']]);
    expect(seen[1]!.at - seen[0]!.at).toBeGreaterThanOrEqual(1000);
    expect(notices[0]).toBe('429 rate_limited: slow down #1 1000');
    expect(notices[1]).toMatch(/^503 kafka_unavailable: the queue \(Kafka\) is unavailable; retry later #2 \d+$/);
  });

  it('reports another refusal at once, with the API’s code, message and field', async () => {
    seen = [];
    script = [{ status: 400, body: error('validation_error', 'model_name: must be one of the known models: tiny', 'model_name') }];
    const refusal = await submit(client()).catch((err: unknown) => err);
    expect(refusal).toBeInstanceOf(HttpError);
    expect(refusal).toMatchObject({ status: 400, code: 'validation_error', field: 'model_name', retryable: false });
    expect(String(refusal)).toBe('400 validation_error: model_name: must be one of the known models: tiny');
    expect(seen).toHaveLength(1);
  });

  it('gives up after its tries, with the last answer', async () => {
    seen = [];
    script = Array.from({ length: 5 }, () => ({ status: 503, body: error('storage_unavailable', 'object storage is unavailable; retry later') }));
    const refusal = await getJob(client([], 3), `${base}/api/jobs/${ID}`).catch((err: unknown) => err);
    expect(String(refusal)).toBe('503 storage_unavailable: object storage is unavailable; retry later');
    expect(seen).toHaveLength(3);
  });

  it('reads a non-JSON error page (a proxy’s) as a plain HTTP error', async () => {
    script = [{ status: 404, body: '<html>not found</html>' }];
    const refusal = await getJob(client(), `${base}/nowhere`).catch((err: unknown) => err);
    expect(refusal).toMatchObject({ status: 404, code: 'http_error' });
  });
});

describe('a re-run', () => {
  const text = () => {
    const sink = { text: '', stream: new Writable({ write: (chunk, _encoding, done) => ((sink.text += chunk), done()) }) };
    return sink;
  };

  it('sends a file again under a new key when the API answers with an earlier job that failed', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'batch-rerun-'));
    await writeFile(join(folder, 'a.png'), 'x');
    const fresh = 'fReShJ0bIdAAAAAAAAAAAA';
    seen = [];
    script = [{ status: 202, body: job('failed') }, { status: 202, body: { ...job('queued'), id: fresh, result_url: `${base}/api/results/${fresh}` } }];
    const [stdout, stderr] = [text(), text()];
    const options = parseOptions(program(), [folder, '--model', 'tiny', '--prompt', 'x', '--api', base]);
    const summary = await runBatch(options, { fetch, stdout: stdout.stream, stderr: stderr.stream });
    await rm(folder, { recursive: true, force: true });
    expect(seen).toHaveLength(2);
    expect(seen[0]!.key).not.toBe(seen[1]!.key);
    expect(stdout.text).toContain(`a.png\t${base}/api/results/${fresh}\n`);
    expect(summary).toMatchObject({ submitted: 1, failed: 0, refused: 0 });
  });
});
