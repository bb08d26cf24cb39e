// Shares the runner's torch.compile artifacts through the object store, so a runner
// on a fresh machine loads what another runner compiled instead of compiling for minutes.
//
// The Python side (diffusion-py/img2img_runner/compile_cache.py) reads and writes a local
// directory given by IMG2IMG_COMPILE_CACHE: one subdirectory per cache key that it computes
// itself (torch/Triton/CUDA versions, GPU, model architecture, dtype, tuning, batch), each a
// manifest.json plus artifacts-<sha>.bin files it checks against the manifest. A stale or
// damaged entry is never loaded there: it is recompiled and rewritten.
//
// This side only mirrors that directory with `compile-cache/<key>/` in the object store:
// fetchCompileCache() beside the spawn (download everything under the prefix; the runner
// waits for DOWNLOAD_MARKER to go before it reads the directory, so a slow store holds its
// compile, not its ready frame), then
// upload() once the runner is ready and again at its `compiled` frame (send the files that are new or changed since the
// download, or were there but not in the store: after a cold compile, the new entry; after a warm start, nothing;
// after a restart in a directory whose upload failed, that entry). Artifact
// files go up before their manifest, so a reader never sees a manifest whose files are
// missing. Nothing here throws: the cache only saves time, and a failure costs a compile.
// consumer/consumer.ts builds each runner's setup from the config (compileCacheSetup) and
// consumer/process.ts calls prepareCompileCache() before every spawn.
import { createHash } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat, writeFile, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { ConsumerConfig } from '../common/config.js';
import type { ModelEntry } from '../common/models.js';

/** What the runner reads: the local directory it loads from and saves to. */
export const COMPILE_CACHE_ENV = 'IMG2IMG_COMPILE_CACHE';
/** What the runner reads too: how many seconds it may wait for DOWNLOAD_MARKER to go. */
export const COMPILE_CACHE_WAIT_ENV = 'IMG2IMG_COMPILE_CACHE_WAIT';
/** In the local directory while the download fills it (compile_cache.py waits for it to go). */
export const DOWNLOAD_MARKER = '.downloading';
const ROOT = 'compile-cache';

/** The object-store operations this needs (common/storage.ts's ObjectStore has them). */
export interface CompileCacheStore {
  list(prefix: string, signal?: AbortSignal): AsyncIterable<{ key: string }>;
  getBytes(key: string, signal?: AbortSignal): Promise<Buffer | undefined>;
  put(key: string, body: Uint8Array | string, contentType: string, signal?: AbortSignal): Promise<string>;
}

export interface CompileCacheLog {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
}

/**
 * The object-store key of a model's cache. It only has to separate what the consumer knows
 * differs (model, source, tuning, dtype, max batch, and a tag for the image or GPU kind): the
 * runner's own key, inside, covers torch, the GPU and the architecture exactly.
 */
export function compileCacheKey(parts: {
  model: string;
  source?: string | null;
  tuning?: string | null;
  dtype?: string | null;
  maxBatch?: number | null;
  tag?: string | null;
}): string {
  const digest = createHash('sha256')
    .update(JSON.stringify([parts.model, parts.source ?? null, parts.tuning ?? null, parts.dtype ?? null, parts.maxBatch ?? null, parts.tag ?? null]))
    .digest('hex')
    .slice(0, 16);
  const name = parts.model.toLowerCase().replace(/[^a-z0-9._-]/g, '-').slice(0, 40);
  return `${name}-${digest}`;
}

export const compileCachePrefix = (key: string) => `${ROOT}/${key}/`;

interface Seen {
  size: number;
  mtimeMs: number;
}

export interface CompileCacheSync {
  /** The local directory: give it to the runner as IMG2IMG_COMPILE_CACHE. */
  dir: string;
  prefix: string;
  downloaded: number;
  downloadedBytes: number;
  downloadSeconds: number;
  /** Sends what the runner wrote since the download; resolves with the keys sent. */
  upload(signal?: AbortSignal): Promise<{ uploaded: string[]; bytes: number; seconds: number }>;
}

/** A relative path that stays inside the directory (object keys come from outside). */
function safeRelative(relative: string): string | undefined {
  if (!relative || relative.endsWith('/')) return undefined;
  const normal = path.posix.normalize(relative);
  if (normal.startsWith('../') || normal === '..' || path.posix.isAbsolute(normal) || normal.includes('\0')) return undefined;
  return normal;
}

/** Files under dir (relative paths, '/'-separated), skipping entries the runner set aside and temporary files. */
async function walk(dir: string): Promise<Map<string, Seen>> {
  const found = new Map<string, Seen>();
  async function visit(current: string, relative: string): Promise<void> {
    let entries;
    try {
      entries = await readdir(current, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const rel = relative ? `${relative}/${entry.name}` : entry.name;
      if (entry.name.includes('.bad-') || entry.name.includes('.tmp-') || entry.name === DOWNLOAD_MARKER) continue;
      const full = path.join(current, entry.name);
      if (entry.isDirectory()) await visit(full, rel);
      else if (entry.isFile()) {
        const info = await stat(full);
        found.set(rel, { size: info.size, mtimeMs: info.mtimeMs });
      }
    }
  }
  await visit(dir, '');
  return found;
}

/** Manifests last: within an entry, its artifact files must be in the store before the manifest naming them. */
const uploadOrder = (a: string, b: string) => Number(a.endsWith('manifest.json')) - Number(b.endsWith('manifest.json')) || a.localeCompare(b);

/**
 * Downloads `compile-cache/<key>/` into dir (created if needed) and returns the handle whose
 * upload() sends back what the runner adds. Never rejects: on a store error the runner simply
 * starts with whatever dir holds.
 */
export async function fetchCompileCache(
  store: CompileCacheStore,
  key: string,
  dir: string,
  options: { signal?: AbortSignal; log?: CompileCacheLog } = {},
): Promise<CompileCacheSync> {
  const { signal, log } = options;
  const prefix = compileCachePrefix(key);
  const started = performance.now();
  let downloaded = 0;
  let downloadedBytes = 0;
  const inStore = new Set<string>();
  try {
    await mkdir(dir, { recursive: true });
    for await (const object of store.list(prefix, signal)) {
      const relative = safeRelative(object.key.slice(prefix.length));
      if (!relative) continue;
      const bytes = await store.getBytes(object.key, signal);
      if (!bytes) continue; // deleted since the listing
      inStore.add(relative);
      const target = path.join(dir, ...relative.split('/'));
      await mkdir(path.dirname(target), { recursive: true });
      const temporary = `${target}.tmp-${process.pid}`;
      await writeFile(temporary, bytes);
      await rename(temporary, target);
      downloaded += 1;
      downloadedBytes += bytes.length;
    }
    log?.info({ prefix, files: downloaded, bytes: downloadedBytes }, 'compile cache downloaded');
  } catch (error) {
    log?.warn({ prefix, err: error }, 'compile cache download failed; the runner compiles what it lacks');
  }
  const downloadSeconds = (performance.now() - started) / 1000;
  // What the store holds as it is here; any other local file (one whose upload failed before a
  // restart in this directory) counts as new and goes up.
  const snapshot = new Map([...(await walk(dir))].filter(([relative]) => inStore.has(relative)));

  return {
    dir,
    prefix,
    downloaded,
    downloadedBytes,
    downloadSeconds,
    async upload(uploadSignal?: AbortSignal) {
      const begun = performance.now();
      const uploaded: string[] = [];
      let bytes = 0;
      try {
        const now = await walk(dir);
        const changed = [...now]
          .filter(([relative, seen]) => {
            const before = snapshot.get(relative);
            return !before || before.size !== seen.size || before.mtimeMs !== seen.mtimeMs;
          })
          .map(([relative]) => relative)
          .sort(uploadOrder);
        for (const relative of changed) {
          const body = await readFile(path.join(dir, ...relative.split('/')));
          await store.put(prefix + relative, body, relative.endsWith('.json') ? 'application/json' : 'application/octet-stream', uploadSignal);
          snapshot.set(relative, now.get(relative)!);
          uploaded.push(prefix + relative);
          bytes += body.length;
        }
        if (uploaded.length) log?.info({ prefix, files: uploaded.length, bytes }, 'compile cache uploaded');
        else log?.info({ prefix }, 'compile cache: nothing new to upload');
      } catch (error) {
        log?.warn({ prefix, err: error }, 'compile cache upload failed; the next cold runner compiles again');
      }
      return { uploaded, bytes, seconds: (performance.now() - begun) / 1000 };
    },
  };
}

/** What one runner needs to share its cache: the store, the key there, its local directory, the download's bound. */
export interface CompileCacheSetup {
  store: CompileCacheStore;
  key: string;
  dir: string;
  /** The download may take this long; then the runner starts with what dir holds. */
  timeoutMs: number;
}

type CacheConfig = Pick<ConsumerConfig, 'COMPILE_CACHE' | 'COMPILE_CACHE_DIR' | 'COMPILE_CACHE_TAG' | 'COMPILE_CACHE_TIMEOUT_MS' | 'RUNNER_MAX_BATCH'>;

/**
 * The setup of a model's runner from the consumer's config; undefined when COMPILE_CACHE is off.
 * The key follows what the consumer passes the runner (source, tuning=, max batch) and the tag;
 * the runner's key inside covers the rest (torch, GPU, dtype, architecture). Each GPU's runner
 * gets a directory of its own: two runners never write the same files at once.
 */
export function compileCacheSetup(config: CacheConfig, model: ModelEntry, store: CompileCacheStore, gpu?: string): CompileCacheSetup | undefined {
  if (config.COMPILE_CACHE === 'off') return undefined;
  const key = compileCacheKey({
    model: model.name,
    source: model.source,
    tuning: model.tuning,
    maxBatch: config.RUNNER_MAX_BATCH || null,
    tag: config.COMPILE_CACHE_TAG,
  });
  const root = path.resolve(config.COMPILE_CACHE_DIR ?? path.join(tmpdir(), 'img2img-compile-cache'));
  return { store, key, dir: path.join(root, gpu === undefined ? key : `${key}.gpu${gpu}`), timeoutMs: config.COMPILE_CACHE_TIMEOUT_MS };
}

export interface PreparedCompileCache {
  /** The runner's environment: IMG2IMG_COMPILE_CACHE=dir, and how long it may wait for the download. */
  env: Record<string, string>;
  /** Settles when the download has ended (done, failed or timed out) and the marker is gone; never rejects. */
  downloaded: Promise<void>;
  /** Call at the ready frame and at the compiled frame: uploads what the runner added, in the background, after the download; never throws. */
  upload(): void;
}

/** The runner's environment for this setup (the same at every start, so a standby process can be given it ahead). */
export function compileCacheEnv(setup: CompileCacheSetup): Record<string, string> {
  return { [COMPILE_CACHE_ENV]: setup.dir, [COMPILE_CACHE_WAIT_ENV]: String(Math.ceil(setup.timeoutMs / 1000) + 5) };
}

/** Downloads in flight by directory: a runner restarted meanwhile shares one, never two writing the same files. */
const downloads = new Map<string, Promise<CompileCacheSync | undefined>>();

/**
 * Before a spawn: puts the marker in the directory and starts the download, bounded by
 * setup.timeoutMs, without waiting for it: the runner loads the directory only once the marker
 * is gone (or after its own bound, a little longer), so a slow or unreachable store costs the
 * cache, never the runner's start.
 */
export async function prepareCompileCache(setup: CompileCacheSetup, log: CompileCacheLog): Promise<PreparedCompileCache> {
  const env = compileCacheEnv(setup);
  let download = downloads.get(setup.dir);
  if (!download) {
    const marker = path.join(setup.dir, DOWNLOAD_MARKER);
    try {
      await mkdir(setup.dir, { recursive: true });
      await writeFile(marker, `${process.pid}\n`);
    } catch (error) {
      log.warn({ dir: setup.dir, err: error }, 'compile cache unusable; the runner compiles');
      return { env, downloaded: Promise.resolve(), upload() {} }; // no marker: the runner does not wait
    }
    download = fetchCompileCache(setup.store, setup.key, setup.dir, { signal: AbortSignal.timeout(setup.timeoutMs), log })
      // Only the local directory can get here (the store's errors are caught inside).
      .catch((error: unknown) => void log.warn({ dir: setup.dir, err: error }, 'compile cache unusable; the runner compiles'))
      .finally(async () => {
        await rm(marker, { force: true }).catch(() => {});
        downloads.delete(setup.dir);
      });
    downloads.set(setup.dir, download);
  }
  const synced = download;
  return {
    env,
    downloaded: synced.then(() => {}),
    upload() {
      // In the background, so it may take longer than the download; but a hung store must not hold the files' bytes forever.
      // upload() logs what it sent or why it failed, and never rejects.
      void synced.then((sync) => sync?.upload(AbortSignal.timeout(10 * setup.timeoutMs)));
    },
  };
}
