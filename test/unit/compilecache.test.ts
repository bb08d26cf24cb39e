// consumer/compilecache.ts against an in-memory object store: download before the spawn,
// upload of what the runner wrote (artifacts before manifests), never a throw.
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  compileCacheKey,
  compileCachePrefix,
  fetchCompileCache,
  type CompileCacheStore,
} from '../../consumer/compilecache.js';
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
});
