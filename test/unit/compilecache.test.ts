// consumer/compilecache.ts against an in-memory object store: download beside the spawn (the
// marker the runner waits on), upload of what the runner wrote (artifacts before manifests),
// never a throw; the setup a runner gets from the config.
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  compileCacheKey,
  compileCachePrefix,
  compileCacheSetup,
  COMPILE_CACHE_ENV,
  COMPILE_CACHE_WAIT_ENV,
  DOWNLOAD_MARKER,
  fetchCompileCache,
  prepareCompileCache,
  type CompileCacheStore,
} from '../../consumer/compilecache.js';
import { ConsumerConfigSchema, loadConfig } from '../../common/config.js';
import { RunnerProcess } from '../../consumer/process.js';
import type { ObjectStore } from '../../common/storage.js';

// The project's ObjectStore is what the consumer will pass (a type check, nothing runs).
export const objectStoreFits = (store: ObjectStore): CompileCacheStore => store;

class MemoryStore implements CompileCacheStore {
  readonly objects = new Map<string, Buffer>();
  readonly puts: string[] = [];
  failList = false;
  failPut = false;

  async *list(prefix: string) {
    if (this.failList) throw new Error('store down');
    for (const key of [...this.objects.keys()].sort()) if (key.startsWith(prefix)) yield { key };
  }

  async getBytes(key: string) {
    return this.objects.get(key);
  }

  async put(key: string, body: Uint8Array | string) {
    if (this.failPut) throw new Error('store down');
    this.objects.set(key, Buffer.from(body));
    this.puts.push(key);
    return 'etag';
  }
}

/** What the Python runner writes after a cold compile (compile_cache.py's layout). */
async function runnerWritesEntry(dir: string, entry: string, artifact = 'compiled bytes') {
  await mkdir(path.join(dir, entry), { recursive: true });
  await writeFile(path.join(dir, entry, 'artifacts-0123456789abcdef.bin'), artifact);
  await writeFile(path.join(dir, entry, 'manifest.json'), JSON.stringify({ format: 1, key: entry }));
}

describe('compile cache sync', () => {
  let work: string;
  beforeEach(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'compilecache-'));
  });
  afterEach(async () => {
    await rm(work, { recursive: true, force: true });
  });

  it('keys are stable, safe, and differ by what the consumer knows', () => {
    const base = { model: 'SD 1.5', source: 'sd15-arch', tuning: 'compile', dtype: 'float16', maxBatch: null, tag: 'h200' };
    const key = compileCacheKey(base);
    expect(key).toBe(compileCacheKey({ ...base }));
    expect(key).toMatch(/^[a-z0-9._-]+$/);
    const others = [
      { source: 'sdxl-arch' },
      { tuning: 'regional' },
      { dtype: 'bfloat16' },
      { maxBatch: 16 },
      { tag: 'h100' },
    ].map((change) => compileCacheKey({ ...base, ...change }));
    expect(new Set([key, ...others]).size).toBe(others.length + 1);
    expect(compileCachePrefix(key)).toBe(`compile-cache/${key}/`);
  });

  it('a cold runner: nothing to download, then its new entry goes up, artifacts before the manifest, once', async () => {
    const store = new MemoryStore();
    const dir = path.join(work, 'cc');
    const sync = await fetchCompileCache(store, 'sd15-abc', dir);
    expect(sync.downloaded).toBe(0);
    await runnerWritesEntry(dir, 'v1-key');
    const first = await sync.upload();
    expect(first.uploaded).toEqual([
      'compile-cache/sd15-abc/v1-key/artifacts-0123456789abcdef.bin',
      'compile-cache/sd15-abc/v1-key/manifest.json',
    ]);
    expect(store.objects.get('compile-cache/sd15-abc/v1-key/artifacts-0123456789abcdef.bin')?.toString()).toBe('compiled bytes');
    expect((await sync.upload()).uploaded).toEqual([]);
  });

  it('a warm runner on a fresh machine gets the files; with nothing new written, nothing goes up', async () => {
    const store = new MemoryStore();
    const first = await fetchCompileCache(store, 'sd15-abc', path.join(work, 'a'));
    await runnerWritesEntry(first.dir, 'v1-key');
    await first.upload();
    store.puts.length = 0;

    const fresh = await fetchCompileCache(store, 'sd15-abc', path.join(work, 'b'));
    expect(fresh.downloaded).toBe(2);
    expect(await readFile(path.join(work, 'b', 'v1-key', 'artifacts-0123456789abcdef.bin'), 'utf8')).toBe('compiled bytes');
    expect((await fresh.upload()).uploaded).toEqual([]);
    expect(store.puts).toEqual([]);
  });

  it('an entry the runner rewrote (stale or damaged) goes up again; set-aside entries and temporary files do not', async () => {
    const store = new MemoryStore();
    const dir = path.join(work, 'cc');
    const seed = await fetchCompileCache(store, 'm', dir);
    await runnerWritesEntry(dir, 'v1-key', 'old');
    await seed.upload();

    const sync = await fetchCompileCache(store, 'm', path.join(work, 'fresh'));
    // The runner found the entry bad: moved it aside, compiled, wrote a new one under the same key.
    const fresh = path.join(work, 'fresh');
    await mkdir(path.join(fresh, 'v1-key.bad-1700000000-42'), { recursive: true });
    await writeFile(path.join(fresh, 'v1-key.bad-1700000000-42', 'REASON'), 'sha mismatch');
    await writeFile(path.join(fresh, 'v1-key', 'artifacts-x.bin.tmp-42'), 'half');
    await new Promise((resolve) => setTimeout(resolve, 20));
    await writeFile(path.join(fresh, 'v1-key', 'artifacts-fedcba9876543210.bin'), 'new bytes');
    await writeFile(path.join(fresh, 'v1-key', 'manifest.json'), JSON.stringify({ format: 1, key: 'v1-key', rewritten: true }));
    const sent = await sync.upload();
    expect(sent.uploaded).toEqual(['compile-cache/m/v1-key/artifacts-fedcba9876543210.bin', 'compile-cache/m/v1-key/manifest.json']);
    expect(JSON.parse(store.objects.get('compile-cache/m/v1-key/manifest.json')!.toString()).rewritten).toBe(true);
  });

  it('ignores object keys that would land outside the directory', async () => {
    const store = new MemoryStore();
    store.objects.set('compile-cache/m/../../escape.bin', Buffer.from('x'));
    store.objects.set('compile-cache/m/v1/../../../escape2.bin', Buffer.from('x'));
    store.objects.set('compile-cache/m/v1/manifest.json', Buffer.from('{}'));
    const sync = await fetchCompileCache(store, 'm', path.join(work, 'cc'));
    expect(sync.downloaded).toBe(1);
    await expect(readFile(path.join(work, 'escape.bin'))).rejects.toThrow();
  });

  it('never throws when the store fails, and reports it', async () => {
    const store = new MemoryStore();
    store.failList = true;
    const warnings: string[] = [];
    const log = { info: () => {}, warn: (_: object, message: string) => void warnings.push(message) };
    const sync = await fetchCompileCache(store, 'm', path.join(work, 'cc'), { log });
    expect(sync.downloaded).toBe(0);
    await runnerWritesEntry(sync.dir, 'v1-key');
    store.failPut = true;
    expect((await sync.upload()).uploaded).toEqual([]);
    expect(warnings).toHaveLength(2);
    // The store is back: what was not sent goes up on the next call.
    store.failPut = false;
    expect((await sync.upload()).uploaded).toHaveLength(2);
  });

  it('a runner restarted in the directory of a failed upload sends that entry, though it wrote nothing new', async () => {
    const store = new MemoryStore();
    const dir = path.join(work, 'cc');
    const first = await fetchCompileCache(store, 'm', dir);
    await runnerWritesEntry(dir, 'v1-key');
    store.failPut = true;
    expect((await first.upload()).uploaded).toEqual([]);
    store.failPut = false;

    const restarted = await fetchCompileCache(store, 'm', dir);
    expect(restarted.downloaded).toBe(0);
    expect((await restarted.upload()).uploaded).toEqual(['compile-cache/m/v1-key/artifacts-0123456789abcdef.bin', 'compile-cache/m/v1-key/manifest.json']);
    // Once the store has it, a further restart sends nothing.
    expect((await (await fetchCompileCache(store, 'm', dir)).upload()).uploaded).toEqual([]);
  });
});

describe('compile cache setup of a runner', () => {
  const config = (env: Record<string, string> = {}) => loadConfig(env, ConsumerConfigSchema);
  const store = new MemoryStore();

  it('on by default, in a folder of the OS temp dir; off when COMPILE_CACHE=off', () => {
    const setup = compileCacheSetup(config(), { name: 'sd15', source: 'sd15-arch' }, store)!;
    expect(setup.dir).toBe(path.join(tmpdir(), 'img2img-compile-cache', setup.key));
    expect(setup.timeoutMs).toBe(60_000);
    expect(compileCacheSetup(config({ COMPILE_CACHE: 'off' }), { name: 'sd15' }, store)).toBeUndefined();
  });

  it('the key follows the model, its source and tuning, RUNNER_MAX_BATCH and COMPILE_CACHE_TAG; each GPU gets its own directory', () => {
    const model = { name: 'sd15', source: 'sd15-arch' };
    const base = compileCacheSetup(config({ COMPILE_CACHE_DIR: 'rel/cc' }), model, store)!;
    expect(base.dir).toBe(path.resolve('rel/cc', base.key)); // absolute: the runner runs in RUNNER_DIR
    const keys = [
      base.key,
      compileCacheSetup(config(), { name: 'sd15', source: 'other' }, store)!.key,
      compileCacheSetup(config({ RUNNER_MAX_BATCH: '8' }), model, store)!.key,
      compileCacheSetup(config({ COMPILE_CACHE_TAG: 'h200' }), model, store)!.key,
      compileCacheSetup(config(), { ...model, tuning: 'fast' }, store)!.key,
    ];
    expect(new Set(keys).size).toBe(5);
    const gpus = ['0', '1'].map((gpu) => compileCacheSetup(config(), model, store, gpu)!);
    expect(gpus.map((setup) => setup.key)).toEqual([base.key, base.key]);
    expect(new Set([base.dir, ...gpus.map((setup) => setup.dir)]).size).toBe(3);
  });

  /** A store that answers nothing until the signal aborts. */
  const hanging: CompileCacheStore = {
    list: (_prefix, signal) => ({
      [Symbol.asyncIterator]: () => ({
        next: () => new Promise((_, reject) => signal!.addEventListener('abort', () => reject(signal!.reason))),
      }),
    }),
    getBytes: async () => undefined,
    put: async () => 'etag',
  };

  it('prepareCompileCache: a store that never answers holds nothing; the marker the runner waits on goes when the download gives up', async () => {
    const dir = path.join(tmpdir(), `compilecache-hang-${process.pid}`);
    const warnings: string[] = [];
    const log = { info: () => {}, warn: (_: object, message: string) => void warnings.push(message) };
    const prepared = await prepareCompileCache({ store: hanging, key: 'k', dir, timeoutMs: 2000 }, log);
    // Returned with the download still running: the runner can be spawned now, and waits on the marker.
    expect(prepared.env).toEqual({ [COMPILE_CACHE_ENV]: dir, [COMPILE_CACHE_WAIT_ENV]: '7' });
    expect(existsSync(path.join(dir, DOWNLOAD_MARKER))).toBe(true);
    expect(warnings).toEqual([]);
    await prepared.downloaded;
    expect(existsSync(path.join(dir, DOWNLOAD_MARKER))).toBe(false);
    expect(warnings).toEqual(['compile cache download failed; the runner compiles what it lacks']);
    await rm(dir, { recursive: true, force: true });
  });

  it('prepareCompileCache: a restart while the download runs shares it, and its upload waits for it', async () => {
    const memory = new MemoryStore();
    let lists = 0;
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const slow: CompileCacheStore = {
      async *list(prefix) {
        lists++;
        await held;
        yield* memory.list(prefix);
      },
      getBytes: (key) => memory.getBytes(key),
      put: (key, body) => memory.put(key, body),
    };
    memory.objects.set('compile-cache/k/seed/manifest.json', Buffer.from('{}'));
    const dir = path.join(tmpdir(), `compilecache-restart-${process.pid}`);
    const quiet = { info: () => {}, warn: () => {} };
    const first = await prepareCompileCache({ store: slow, key: 'k', dir, timeoutMs: 10_000 }, quiet);
    const second = await prepareCompileCache({ store: slow, key: 'k', dir, timeoutMs: 10_000 }, quiet);
    await runnerWritesEntry(dir, 'v1-key');
    second.upload(); // at ready, before the download ended: it must not run yet
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(memory.puts).toEqual([]);
    release();
    await Promise.all([first.downloaded, second.downloaded]);
    expect(lists).toBe(1);
    expect(await readFile(path.join(dir, 'seed', 'manifest.json'), 'utf8')).toBe('{}');
    for (let i = 0; i < 100 && memory.puts.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(memory.puts).toEqual(['compile-cache/k/v1-key/artifacts-0123456789abcdef.bin', 'compile-cache/k/v1-key/manifest.json']);
    await rm(dir, { recursive: true, force: true });
  });

  it('prepareCompileCache: upload() sends in the background what the runner wrote', async () => {
    const memory = new MemoryStore();
    const dir = path.join(tmpdir(), `compilecache-ready-${process.pid}`);
    const prepared = await prepareCompileCache({ store: memory, key: 'k', dir, timeoutMs: 1000 }, { info: () => {}, warn: () => {} });
    await runnerWritesEntry(dir, 'v1-key');
    prepared.upload();
    for (let i = 0; i < 100 && memory.puts.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(memory.puts).toEqual(['compile-cache/k/v1-key/artifacts-0123456789abcdef.bin', 'compile-cache/k/v1-key/manifest.json']);
    await rm(dir, { recursive: true, force: true });
  });

  it('a runner is spawned while its cache still downloads', async () => {
    const dir = path.join(tmpdir(), `compilecache-spawn-${process.pid}`);
    const spawned: string[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void spawned.push(JSON.parse(line).msg) });
    const runner = new RunnerProcess(
      {
        model: 'm', python: '/nonexistent/python', cwd: tmpdir(), device: 'cpu', stallMs: 10_000, startTimeoutMs: 10_000, logger,
        compileCache: { store: hanging, key: 'k', dir, timeoutMs: 2000 },
      },
      { onMessage: () => {}, onExit: () => {}, busy: () => false },
    );
    await expect(runner.ensureStarted()).rejects.toThrow(); // no such python: what counts is that it was tried
    expect(spawned).toContain('runner spawned');
    expect(existsSync(path.join(dir, DOWNLOAD_MARKER))).toBe(true); // the download had not ended
    await runner.stop(1000);
    for (let i = 0; i < 100 && existsSync(path.join(dir, DOWNLOAD_MARKER)); i++) await new Promise((resolve) => setTimeout(resolve, 50));
    await rm(dir, { recursive: true, force: true });
  });
});
