// The batch client (scripts/batch.ts) as a user runs it: a child process against the real API,
// a real consumer with the `tiny` model, and the real Kafka and MinIO.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobTopic } from '../../common/topics.js';
import { uniqueName } from '../helpers/env.js';
import { startTestApi, topicSize, type TestApi } from '../helpers/api.js';
import { ConsumerProcess, pngOf } from '../helpers/consumer.js';

let api: TestApi;
let consumer: ConsumerProcess;
let folder: string;
/** Idempotency claims outlive a test's topics, so every run of this file asks for something new. */
const prompt = `a red fox ${uniqueName('batch')}`;
/** The links of the first run, by file. */
let firstLinks: Record<string, string | undefined>;

const IMAGES = ['a.png', 'b.jpg', 'b.png', 'c.jpeg', 'sub/d.png'];
/** Each result is named after its input's stem; b.jpg and b.png would share one, so they keep their extension. */
const RESULTS: Record<string, string> = { 'a.png': 'a.png', 'b.jpg': 'b.jpg.png', 'b.png': 'b.png.png', 'c.jpeg': 'c.png', 'sub/d.png': 'sub/d.png' };

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function batch(...args: string[]): Promise<Run> {
  const child = spawn('node_modules/.bin/tsx', ['scripts/batch.ts', folder, '--api', api.url, '--prompt', prompt, '--steps', '2', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk) => (stdout += chunk));
  child.stderr.on('data', (chunk) => (stderr += chunk));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

/** The link line of each file: `name<TAB>result_url[<TAB>note]`. */
const links = (stdout: string) =>
  Object.fromEntries(
    stdout
      .split('\n')
      .map((line) => line.split('\t'))
      .filter((cells) => cells[1]?.startsWith('http'))
      .map(([name, url]) => [name, url]),
  );

const queued = () => topicSize(api.services.admin, jobTopic(api.config.TOPIC_PREFIX, 'tiny', 'normal'));

beforeAll(async () => {
  api = await startTestApi();
  consumer = await new ConsumerProcess({ TOPIC_PREFIX: api.config.TOPIC_PREFIX }).start();
  folder = await mkdtemp(join(tmpdir(), 'batch-'));
  await mkdir(join(folder, 'sub'));
  await writeFile(join(folder, 'a.png'), await pngOf(64, 64, 1));
  await writeFile(join(folder, 'b.jpg'), await sharp(await pngOf(64, 64, 2)).jpeg().toBuffer());
  await writeFile(join(folder, 'b.png'), await pngOf(64, 64, 5));
  await writeFile(join(folder, 'c.jpeg'), await sharp(await pngOf(64, 64, 3)).jpeg().toBuffer());
  await writeFile(join(folder, 'sub', 'd.png'), await pngOf(64, 64, 4));
  await writeFile(join(folder, 'notes.txt'), 'not an image');
  await consumer.ready();
}, 120_000);

afterAll(async () => {
  await consumer?.stop('SIGKILL');
  await api?.close();
  if (folder) await rm(folder, { recursive: true, force: true });
});

describe('npm run batch', () => {
  const out = () => join(folder, 'results'); // inside the input folder: must never be read as input

  it('submits every image, warns about the rest, waits and saves each result named after its input', async () => {
    const run = await batch('--model', 'tiny', '--recursive', '--wait', '--out', out());
    expect(run.code, run.stderr).toBe(0);
    firstLinks = links(run.stdout);
    expect(Object.keys(firstLinks).sort()).toEqual(IMAGES);
    for (const url of Object.values(firstLinks)) expect(url).toMatch(new RegExp(`^${api.url}/api/results/[A-Za-z0-9_-]{22}$`));
    expect(run.stderr).toContain('warning: notes.txt: not an image');
    expect(run.stdout).toContain('submitted 5, succeeded 5, failed 0, refused 0, skipped 1, already done 0');

    for (const name of IMAGES) {
      // From a buffer: the in-process API lets sharp load buffers only.
      const meta = await sharp(await readFile(join(out(), RESULTS[name]!))).metadata();
      expect([name, meta.format, meta.width, meta.height]).toEqual([name, 'png', 64, 64]);
    }
    expect((await readdir(out(), { recursive: true })).sort()).toEqual(['.img2img-batch-results', 'a.png', 'b.jpg.png', 'b.png.png', 'c.png', 'sub', 'sub/d.png']);
    expect(await queued()).toBe(5);
  });

  it('submits nothing again on a re-run: saved results are already done, and the API answers with the same jobs', async () => {
    const again = await batch('--model', 'tiny', '--recursive', '--wait', '--out', out());
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('submitted 0, succeeded 0, failed 0, refused 0, skipped 1, already done 5');
    expect(again.stdout).toContain(`sub/d.png\talready done: ${join(out(), 'sub', 'd.png')}`);

    // Without --out nothing is known locally: the Idempotency-Key brings back the jobs of the first run.
    const second = await batch('--model', 'tiny', '--recursive');
    expect(second.code, second.stderr).toBe(0);
    expect(links(second.stdout)).toEqual(firstLinks);
    expect(second.stdout).toContain('submitted 0, succeeded 0, failed 0, refused 0, skipped 1, already done 5');
    expect(await queued()).toBe(5);
  });

  it('exits non-zero with the API’s message when it refuses the request', async () => {
    const run = await batch('--model', 'no-such-model');
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('a.png: not submitted: 400 validation_error: model_name: must be one of the known models: tiny');
    expect(run.stdout).toContain('submitted 0, succeeded 0, failed 0, refused 4, skipped 1, already done 0');
    expect(await queued()).toBe(5);
  });
});
