// The pure parts of the batch client: Retry-After, result names, the idempotency key, the
// folder walk and the command line.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formFields, getJob, idempotencyKey, retryKey, sha256 } from '../../scripts/batch/client.js';
import { isImage, listFiles, markResults, outputPaths } from '../../scripts/batch/files.js';
import { parseOptions, program, UsageError, type JobRequest } from '../../scripts/batch/options.js';
import { HttpError, parseRetryAfter } from '../../scripts/batch/retry.js';

describe('parseRetryAfter', () => {
  const now = Date.parse('2025-01-01T12:00:00Z');

  it('reads delay-seconds', () => {
    expect(parseRetryAfter('0', now)).toBe(0);
    expect(parseRetryAfter('2', now)).toBe(2000);
    expect(parseRetryAfter(' 120 ', now)).toBe(120_000);
  });

  it('reads an HTTP date as the time left until it, and a past date as no wait', () => {
    expect(parseRetryAfter('Wed, 01 Jan 2025 12:00:30 GMT', now)).toBe(30_000);
    expect(parseRetryAfter('Wed, 01 Jan 2025 11:00:00 GMT', now)).toBe(0);
  });

  it('gives undefined for a missing or unreadable value', () => {
    for (const value of [null, undefined, '', '   ', '-1', '1.5', 'soon', '12abc']) expect(parseRetryAfter(value, now)).toBeUndefined();
  });
});

describe('HttpError', () => {
  it('is retryable for overload and unavailability, and for a key still being processed, not for other refusals', () => {
    const retryable = (status: number, code = 'x') => new HttpError(status, code, 'm').retryable;
    expect([429, 502, 503, 504].map((status) => retryable(status))).toEqual([true, true, true, true]);
    expect(retryable(409, 'idempotency_in_progress')).toBe(true);
    expect([400, 404, 413, 415, 422, 500].map((status) => retryable(status))).toEqual([false, false, false, false, false, false]);
    expect(retryable(409, 'idempotency_key_reused')).toBe(false);
  });
});

describe('outputPaths', () => {
  const results = (names: string[]) => [...outputPaths('/r', names).values()];

  it('names each result after its input, the extension replaced by .png', () => {
    expect(results(['img0.png', 'photo.jpg', 'sub/deeper/cat.webp', 'a.b.jpeg'])).toEqual(['/r/img0.png', '/r/photo.png', '/r/sub/deeper/cat.png', '/r/a.b.png']);
  });

  it('keeps the extension of inputs that would share a result, whatever the case, and leaves the others alone', () => {
    expect(results(['cat.jpg', 'cat.png', 'Cat.webp', 'dog.jpg', 'sub/cat.jpg'])).toEqual([
      '/r/cat.jpg.png',
      '/r/cat.png.png',
      '/r/Cat.webp.png',
      '/r/dog.png',
      '/r/sub/cat.png',
    ]);
  });

  it('never gives two inputs the same result, also when a kept name meets another input’s result', () => {
    const names = ['a.jpg', 'a.png', 'a.jpg.webp', 'a.jpg.png', 'a.png.png', 'b.png', 'b.png.jpg', 'sub/c.png', 'sub.c.png', 'B.jpeg'];
    const chosen = results(names);
    expect(new Set(chosen.map((path) => path.toLowerCase())).size).toBe(names.length);
    expect(chosen).toContain('/r/sub/c.png');
  });
});

describe('isImage', () => {
  it('goes by the extension, in any case', () => {
    expect(['a.png', 'a.JPG', 'a.jpeg', 'b.c.webp'].every(isImage)).toBe(true);
    expect(['a.gif', 'a.txt', 'png', 'a.png.bak', '.png'].some(isImage)).toBe(false);
  });
});

describe('idempotencyKey', () => {
  const request: JobRequest = { model: 'tiny', prompt: 'a fox', priority: 'normal' };
  const image = sha256('image bytes');

  it('is the same for the same bytes and request, whatever the order of the fields', () => {
    const fields = formFields({ ...request, strength: 0.5, seed: 7 });
    const reversed = Object.fromEntries(Object.entries(fields).reverse());
    expect(idempotencyKey(image, fields)).toBe(idempotencyKey(image, reversed));
    expect(idempotencyKey(image, fields)).toMatch(/^[0-9a-f]{64}$/);
  });

  it('changes with the image and with every field sent', () => {
    const base = idempotencyKey(image, formFields(request));
    const variants = [
      idempotencyKey(sha256('other bytes'), formFields(request)),
      idempotencyKey(image, formFields({ ...request, prompt: 'a wolf' })),
      idempotencyKey(image, formFields({ ...request, priority: 'high' })),
      idempotencyKey(image, formFields({ ...request, model: 'other' })),
      idempotencyKey(image, formFields({ ...request, negativePrompt: 'blur' })),
      idempotencyKey(image, formFields({ ...request, strength: 0.5 })),
      idempotencyKey(image, formFields({ ...request, steps: 4 })),
      idempotencyKey(image, formFields({ ...request, guidanceScale: 3 })),
      idempotencyKey(image, formFields({ ...request, seed: 1 })),
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
  });

  it('gives a failed job’s file a new key that depends only on that job', () => {
    const key = idempotencyKey(image, formFields(request));
    expect(retryKey(key, 'job-a')).toBe(retryKey(key, 'job-a'));
    expect(retryKey(key, 'job-a')).not.toBe(retryKey(key, 'job-b'));
    expect(retryKey(key, 'job-a')).not.toBe(key);
  });

  it('sends only the fields that were given, under the API’s names', () => {
    expect(formFields({ ...request, negativePrompt: 'blur', guidanceScale: 3, seed: 0 })).toEqual({
      model_name: 'tiny',
      prompt: 'a fox',
      priority: 'normal',
      negative_prompt: 'blur',
      guidance_scale: '3',
      seed: '0',
    });
  });
});

describe('listFiles', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'batch-unit-'));
    await mkdir(join(root, 'sub', 'deeper'), { recursive: true });
    await mkdir(join(root, 'results'));
    await mkdir(join(root, 'old-results'));
    for (const name of ['b.png', 'a.txt', 'sub/c.jpg', 'sub/deeper/d.webp', 'results/b.png.png', 'old-results/a.png.png']) {
      await writeFile(join(root, name), 'x');
    }
    await markResults(join(root, 'old-results'));
    await symlink(join(root, 'b.png'), join(root, 'link.png'));
    await symlink(root, join(root, 'sub', 'loop'));
  });
  afterAll(() => rm(root, { recursive: true, force: true }));

  const names = async (options: { recursive: boolean; exclude?: string }) => (await listFiles(root, options)).map((file) => file.name);

  it('lists the folder’s own files, sorted, without subfolders unless recursive', async () => {
    expect(await names({ recursive: false })).toEqual(['a.txt', 'b.png', 'link.png']);
  });

  it('walks subfolders when recursive, but not linked folders, this run’s results or marked results', async () => {
    expect(await names({ recursive: true, exclude: join(root, 'results') })).toEqual(['a.txt', 'b.png', 'link.png', 'sub/c.jpg', 'sub/deeper/d.webp']);
  });
});

describe('parseOptions', () => {
  const parse = (...argv: string[]) => parseOptions(program(), ['./images', '--model', 'tiny', '--prompt', 'a fox', ...argv]);

  it('has defaults for everything but the model and the prompt', () => {
    const options = parse();
    expect(options).toMatchObject({ api: 'http://127.0.0.1:8000', concurrency: 4, recursive: false, wait: false, out: undefined });
    expect(options.request).toEqual({ model: 'tiny', prompt: 'a fox', priority: 'normal' });
    expect(options.folder).toMatch(/\/images$/);
  });

  it('reads numbers, priorities and the API URL', () => {
    const options = parse('--priority', 'high', '--strength', '0.3', '--steps', '4', '--seed', '9', '--concurrency', '2', '--api', 'http://h:1/');
    expect(options.request).toMatchObject({ priority: 'high', strength: 0.3, steps: 4, seed: 9 });
    expect([options.concurrency, options.api]).toEqual([2, 'http://h:1']);
  });

  it('refuses bad values before anything is sent', () => {
    const silent = () => program().configureOutput({ writeErr: () => {}, writeOut: () => {} });
    const bad = (...argv: string[]) => () => parseOptions(silent(), ['./images', '--model', 'tiny', '--prompt', 'x', ...argv]);
    expect(bad('--priority', 'urgent')).toThrow(/priority/);
    expect(bad('--steps', '2.5')).toThrow(/integer/);
    expect(bad('--concurrency', '0')).toThrow(/at least 1/);
    expect(bad('--strength', 'abc')).toThrow(/number/);
    expect(bad('--api', 'ftp://x')).toThrow(/http/);
    expect(bad('--out', './r')).toThrow(UsageError);
    expect(bad('--wait', '--out', './images')).toThrow(/input folder/);
  });
});

describe('the API key', () => {
  const parse = (argv: string[]) => parseOptions(program(), ['folder', '--model', 'tiny', '--prompt', 'p', ...argv]);

  it('comes from --api-key, else from IMG2IMG_API_KEY, and is sent as a Bearer token', async () => {
    expect(parse([]).apiKey).toBeUndefined();
    expect(parse(['--api-key', 'i2i_from_flag']).apiKey).toBe('i2i_from_flag');
    process.env.IMG2IMG_API_KEY = 'i2i_from_env';
    try {
      expect(parse([]).apiKey).toBe('i2i_from_env');
      expect(parse(['--api-key', 'i2i_from_flag']).apiKey).toBe('i2i_from_flag');
    } finally {
      delete process.env.IMG2IMG_API_KEY;
    }
    const seen: Headers[] = [];
    const fetch = (async (_url: string, init: RequestInit) => {
      seen.push(new Headers(init.headers));
      return Response.json({ id: 'a', status: 'queued', error: null, result_url: 'http://127.0.0.1:8000/api/results/a' });
    }) as typeof globalThis.fetch;
    await getJob({ fetch, api: 'http://127.0.0.1:8000', apiKey: 'i2i_key' }, 'http://127.0.0.1:8000/api/jobs/a');
    expect(seen[0]!.get('authorization')).toBe('Bearer i2i_key');
  });
});
