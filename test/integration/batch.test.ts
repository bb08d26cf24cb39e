// The batch client (scripts/batch.ts) as a user runs it: a child process against the real API,
// a real consumer with the `tiny` model, and the real Kafka and MinIO; Ctrl-C on a terminal.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jobTopic } from '../../common/topics.js';
import { uniqueName } from '../helpers/env.js';
import { startTestApi, topicSize, type TestApi } from '../helpers/api.js';
import { ConsumerProcess, pngOf } from '../helpers/consumer.js';
import { freePort } from '../helpers/processes.js';

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

/** The link of each file's line: `name<TAB>link<TAB>state`. */
const links = (stdout: string) =>
  Object.fromEntries(
    stdout
      .split('\n')
      .map((line) => line.split('\t'))
      .filter((cells) => cells[1]?.startsWith('http'))
      .map(([name, url]) => [name, url]),
  );

/** The state of each file's line, in the order of IMAGES. */
const states = (stdout: string) => {
  const byName = new Map(stdout.split('\n').map((line) => line.split('\t')).filter((cells) => cells.length === 3).map(([name, , state]) => [name, state]));
  return IMAGES.map((name) => byName.get(name));
};

/** The summary at the end of stdout: the counts, then where the results are. */
const summary = (counts: string, results: string) => new RegExp(`${counts}\\nresults: ${results.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\n$`);

/**
 * Runs `command` on a pseudo-terminal (util-linux `script`), as a user in a terminal does, and
 * types Ctrl-C once `ready` holds for what it has printed; the terminal sends SIGINT.
 */
function onTerminal(command: string[], ready: (output: string) => boolean): Promise<{ code: number | null; output: string }> {
  const quoted = command.map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(' ');
  const child = spawn('script', ['-qfec', quoted, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  let typed = false;
  const take = (chunk: Buffer) => {
    output += chunk;
    if (!typed && ready(output)) {
      typed = true;
      setTimeout(() => child.stdin.write('\x03'), 200);
    }
  };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, output })));
}

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
    expect(states(run.stdout)).toEqual(IMAGES.map(() => 'submitted'));
    expect(run.stderr).toContain('warning: notes.txt: not an image');
    expect(run.stdout).toMatch(summary('submitted 5, succeeded 5, failed 0, refused 0, skipped 1, already done 0, remaining 0', `saved in ${out()}`));

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
    expect(again.stdout).toMatch(summary('submitted 0, succeeded 0, failed 0, refused 0, skipped 1, already done 5, remaining 0', `saved in ${out()}`));
    // The same three columns: the link of a result saved by the first run is its file.
    expect(again.stdout).toContain(`sub/d.png\t${pathToFileURL(join(out(), 'sub', 'd.png')).href}\talready done\n`);
    expect(states(again.stdout)).toEqual(IMAGES.map(() => 'already done'));

    // Without --out nothing is known locally: the Idempotency-Key brings back the jobs of the first run.
    const second = await batch('--model', 'tiny', '--recursive');
    expect(second.code, second.stderr).toBe(0);
    expect(links(second.stdout)).toEqual(firstLinks);
    expect(states(second.stdout)).toEqual(IMAGES.map(() => 'already done'));
    expect(second.stdout).toMatch(summary('submitted 0, succeeded 0, failed 0, refused 0, skipped 1, already done 5, remaining 0', 'at the access links above'));
    expect(await queued()).toBe(5);
  });

  it('stops before the first upload, naming the models the API serves, when it does not serve --model', async () => {
    const run = await batch('--model', 'no-such-model', '--recursive');
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(new RegExp(`batch: --model no-such-model: the API at ${api.url} does not serve it; it serves [^\\n]*\\btiny\\b[^\\n]*; nothing was sent\\n`));
    expect(run.stdout).toMatch(summary('submitted 0, succeeded 0, failed 0, refused 0, skipped 1, already done 0, remaining 5', 'at the access links above'));
    expect(await queued()).toBe(5);
  });

  it('stops before the first upload when nothing answers at --api', async () => {
    const closed = await freePort();
    const run = await batch('--model', 'tiny', '--api', `http://127.0.0.1:${closed}`);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`batch: cannot reach the API at http://127.0.0.1:${closed}: fetch failed (ECONNREFUSED); nothing was sent`);
  });

  it('on Ctrl-C gives the terminal back its cursor and line wrap and prints what was done and what remains', async () => {
    await consumer.stop('SIGKILL'); // the jobs stay queued: the client is still waiting when Ctrl-C comes
    const out = await mkdtemp(join(tmpdir(), 'batch-stopped-'));
    const args = ['scripts/batch.ts', folder, '--api', api.url, '--model', 'tiny', '--prompt', `${prompt} stopped`, '--recursive', '--wait', '--out', out];
    const run = await onTerminal([process.execPath, '--import', 'tsx', ...args], (output) => output.includes('waiting'));
    await rm(out, { recursive: true, force: true });
    const text = run.output.replaceAll('\r\n', '\n');
    expect(run.code, text).toBe(130);
    // cli-progress hides the cursor and turns line wrap off while it draws; both come back after.
    for (const [off, on] of [['\x1b[?25l', '\x1b[?25h'], ['\x1b[?7l', '\x1b[?7h']] as const) {
      expect(text.indexOf(off), JSON.stringify(text)).toBeGreaterThan(-1);
      expect(text.lastIndexOf(on)).toBeGreaterThan(text.lastIndexOf(off));
    }
    expect(text).toContain('stopped: 5 images not finished; the same command goes on where this one stopped (nothing is sent twice)');
    expect(text).toMatch(summary('submitted 5, succeeded 0, failed 0, refused 0, skipped 1, already done 0, remaining 5', `saved in ${out}`));
  });
});
