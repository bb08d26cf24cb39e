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
import { runBatch, StartError, type Io } from '../../scripts/batch/run.js';

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

const text = () => {
  const sink = { text: '', stream: new Writable({ write: (chunk, _encoding, done) => ((sink.text += chunk), done()) }) };
  return sink;
};
const models = (...list: object[]): Answer => ({ status: 200, body: { models: list } });
const tiny = { name: 'tiny', available: true, unavailable_reason: null };
const FAST = { tries: 2, minDelayMs: 10, maxDelayMs: 20, maxRetryAfterMs: 100 };

/** A folder of one image, run as `batch <folder> --model <model> --prompt x --api <api> ...args`. */
async function runOnce(model: string, args: string[] = [], io: Partial<Io> = {}, api = base) {
  const folder = await mkdtemp(join(tmpdir(), 'batch-run-'));
  await writeFile(join(folder, 'a.png'), 'x');
  const [stdout, stderr] = [text(), text()];
  const options = parseOptions(program(), [folder, '--model', model, '--prompt', 'x', '--api', api, ...args]);
  try {
    const summary = await runBatch(options, { fetch, stdout: stdout.stream, stderr: stderr.stream, retry: FAST, pollMs: 20, ...io });
    return { summary, stdout: stdout.text, stderr: stderr.text };
  } catch (error) {
    return { error, stdout: stdout.text, stderr: stderr.text };
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

describe('the check before the first upload', () => {
  it('stops with the models the API serves when it does not serve --model, and sends nothing', async () => {
    seen = [];
    script = [models(tiny, { ...tiny, name: 'sdxl' })];
    const run = await runOnce('sd15');
    expect(run.error).toBeInstanceOf(StartError);
    expect(String((run.error as Error).message)).toBe(`--model sd15: the API at ${base} does not serve it; it serves tiny, sdxl; nothing was sent`);
    expect(seen.map((request) => request.method)).toEqual(['GET']);
    expect(run.stdout).toContain('remaining 1\n');
  });

  it('stops with the reason of a model the API found unusable', async () => {
    script = [models({ name: 'tiny', available: false, unavailable_reason: '/models/x does not exist' })];
    const run = await runOnce('tiny');
    expect((run.error as Error).message).toBe(`--model tiny: unavailable at ${base}: /models/x does not exist; nothing was sent`);
  });

  it('stops when the API does not answer, or is not this API', async () => {
    const closed = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => resolve(port));
      });
    });
    const away = await runOnce('tiny', [], {}, `http://127.0.0.1:${closed}`);
    expect((away.error as Error).message).toBe(`cannot reach the API at http://127.0.0.1:${closed}: fetch failed (ECONNREFUSED); nothing was sent`);
    expect(away.stderr).toContain('GET /api/models: fetch failed (ECONNREFUSED); try 2 of 2');

    script = [{ status: 404, body: '<html>not found</html>' }];
    const other = await runOnce('tiny');
    expect((other.error as Error).message).toBe(`the API at ${base} answered GET /api/models with 404 http_error: HTTP 404 Not Found; nothing was sent`);
    script = [{ status: 200, body: { hello: 'world' } }];
    const wrong = await runOnce('tiny');
    expect((wrong.error as Error).message).toBe(`${base} is not the img2img API: GET /api/models answered no list of models; nothing was sent`);
  });
});

describe('a stopped batch (Ctrl-C)', () => {
  it('drops what is in flight and says what it sent, what finished, what remains and where the results are', async () => {
    seen = [];
    script = [models(tiny), { status: 202, body: job('queued') }, ...Array.from({ length: 500 }, () => ({ status: 200, body: { ...job('queued'), error: null } }))];
    const stop = new AbortController();
    const polled = setInterval(() => seen.filter((request) => request.method === 'GET').length > 2 && stop.abort('SIGINT'), 5);
    const run = await runOnce('tiny', ['--wait', '--out', join(tmpdir(), 'batch-stopped-results')], { signal: stop.signal });
    clearInterval(polled);
    script = [];
    expect(run.summary).toMatchObject({ submitted: 1, succeeded: 0, failed: 0, remaining: 1, interrupted: true });
    expect(run.stderr).toContain('stopped: 1 images not finished; the same command goes on where this one stopped (nothing is sent twice)');
    expect(run.stdout).toBe(
      `a.png\t${base}/api/results/${ID}\tsubmitted\n` +
        'submitted 1, succeeded 0, failed 0, refused 0, skipped 0, already done 0, remaining 1\n' +
        `results: saved in ${join(tmpdir(), 'batch-stopped-results')}\n`,
    );
    await rm(join(tmpdir(), 'batch-stopped-results'), { recursive: true, force: true });
  });
});

describe('a re-run', () => {

  it('sends a file again under a new key when the API answers with an earlier job that failed', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'batch-rerun-'));
    await writeFile(join(folder, 'a.png'), 'x');
    const fresh = 'fReShJ0bIdAAAAAAAAAAAA';
    seen = [];
    script = [models(tiny), { status: 202, body: job('failed') }, { status: 202, body: { ...job('queued'), id: fresh, result_url: `${base}/api/results/${fresh}` } }];
    const [stdout, stderr] = [text(), text()];
    const options = parseOptions(program(), [folder, '--model', 'tiny', '--prompt', 'x', '--api', base]);
    const summary = await runBatch(options, { fetch, stdout: stdout.stream, stderr: stderr.stream });
    await rm(folder, { recursive: true, force: true });
    expect(seen.map((request) => request.method)).toEqual(['GET', 'POST', 'POST']);
    expect(seen[1]!.key).not.toBe(seen[2]!.key);
    expect(stdout.text).toContain(`a.png\t${base}/api/results/${fresh}\tsubmitted\n`);
    expect(summary).toMatchObject({ submitted: 1, failed: 0, refused: 0 });
  });
});
