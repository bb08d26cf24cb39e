// The compile cache wired into the consumer, against the real MinIO and the `tiny` runner: what a
// runner is given before its spawn, what goes up once it is ready, what a fresh machine gets
// back, and a store that is down or hangs costing the cache, never the runner.
//
// The tiny runner on a CPU compiles nothing, so the runner's python is a wrapper script that
// waits, as the runner's compile_cache.load() does, until the consumer's download marker is
// gone, records IMG2IMG_COMPILE_CACHE and the files in it, writes the entry a cold compile
// would write (unless the directory already holds it, as after a download), then execs the
// real runner.
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../common/config.js';
import type { ModelEntry } from '../../common/models.js';
import { createKafka } from '../../common/kafka.js';
import { RecordStore } from '../../common/records.js';
import { ObjectStore } from '../../common/storage.js';
import { compileCachePrefix, compileCacheSetup } from '../../consumer/compilecache.js';
import { createConsumer, type Consumer } from '../../consumer/consumer.js';
import { Runner } from '../../consumer/runner.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { enqueue, pngOf, prepareServers, waitFor, waitForStatus } from '../helpers/consumer.js';

const work = mkdtempSync(join(tmpdir(), 'compilecache-it-'));
const spawnLog = join(work, 'spawns.log');
const python = join(work, 'python');
writeFileSync(
  python,
  `#!/bin/sh
dir="$IMG2IMG_COMPILE_CACHE"
echo "spawn $dir" >> '${spawnLog}'
echo "args $*" >> '${spawnLog}'
if [ -n "$dir" ]; then
  while [ -e "$dir/.downloading" ]; do sleep 0.05; done
  (cd "$dir" && find . -type f | sort | while read -r f; do echo "file \${f#./} $(cat "$f")"; done) >> '${spawnLog}'
  if [ ! -e "$dir/cold/manifest.json" ]; then
    mkdir -p "$dir/cold" && printf 'compiled-kernels' > "$dir/cold/artifacts-bbbb.bin" && printf '{"format":1,"key":"cold"}' > "$dir/cold/manifest.json"
  fi
fi
exec '${resolve('diffusion-py/.venv/bin/python')}' "$@"
`,
);
chmodSync(python, 0o755);

interface Spawn {
  dir: string;
  files: Record<string, string>;
  args?: string;
}

/** What each runner saw at its spawn, in order. */
function spawns(): Spawn[] {
  if (!existsSync(spawnLog)) return [];
  const seen: Spawn[] = [];
  for (const line of readFileSync(spawnLog, 'utf8').split('\n')) {
    if (line.startsWith('spawn ')) seen.push({ dir: line.slice('spawn '.length), files: {} });
    else if (line.startsWith('args ')) seen.at(-1)!.args = line.slice('args '.length);
    else if (line.startsWith('file ')) {
      const [, name = '', ...content] = line.split(' ');
      seen.at(-1)!.files[name] = content.join(' ');
    }
  }
  return seen;
}

/** A logger whose lines the test reads. */
function capturedLogger() {
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ name: 'consumer-test', level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  return { logger, lines, find: (message: string) => lines.filter((line) => line.msg === message) };
}

const config = testConfig({
  RUNNER_PYTHON: python,
  RUNNER_DEVICE: 'cpu',
  COMPILE_CACHE_TAG: uniqueName('cc'), // a key, and so a prefix, of this test's own
  IDLE_UNLOAD_MS: '0',
  SHUTDOWN_GRACE_MS: '1000',
});
const store = new ObjectStore(config);
const kafka = createKafka(config, uniqueName('compilecache-test'));
const records = new RecordStore(store);
const tiny = { name: 'tiny' };
const { key } = compileCacheSetup(config, tiny, store)!;
const prefix = compileCachePrefix(key);

async function listed(): Promise<Map<string, Date>> {
  const found = new Map<string, Date>();
  for await (const object of store.list(prefix)) found.set(object.key.slice(prefix.length), object.lastModified);
  return found;
}

async function startConsumer(overrides: Partial<Config>, model: ModelEntry = tiny) {
  const log = capturedLogger();
  const consumer: Consumer = createConsumer(
    { ...config, CONSUMER_METRICS_PORT: 0, ...overrides },
    { models: [model], listed: [model], logger: log.logger },
  );
  await consumer.start();
  return { consumer, ...log };
}

beforeAll(async () => {
  await prepareServers(kafka, config, store);
}, 120_000);

afterAll(async () => {
  for await (const object of store.list(prefix)) await store.delete(object.key);
  store.close();
  rmSync(work, { recursive: true, force: true });
});

describe('compile cache in the consumer', () => {
  it('downloads the entry before the runner reads its directory, uploads only what the runner added once ready, and a fresh machine gets both', async () => {
    await store.put(`${prefix}seed/artifacts-aaaa.bin`, 'seeded-kernels', 'application/octet-stream');
    await store.put(`${prefix}seed/manifest.json`, '{"format":1,"key":"seed"}', 'application/json');
    const seeded = await listed();

    // A machine whose local directory is empty: the download fills it, the runner compiles "cold".
    const firstDir = join(work, 'machine-1');
    const first = await startConsumer({ COMPILE_CACHE_DIR: firstDir });
    try {
      await waitFor(async () => ((await listed()).has('cold/manifest.json') ? true : undefined), 60_000, 'the new entry in the store');
      const [spawn] = spawns();
      expect(spawn!.dir).toBe(join(firstDir, key));
      expect(spawn!.files).toEqual({ 'seed/artifacts-aaaa.bin': 'seeded-kernels', 'seed/manifest.json': '{"format":1,"key":"seed"}' });

      // Exactly the runner's new files went up: the downloaded ones were not sent back.
      const uploaded = await waitFor(async () => first.find('compile cache uploaded')[0]);
      expect(uploaded).toMatchObject({ prefix, files: 2 });
      const after = await listed();
      expect([...after.keys()].sort()).toEqual(['cold/artifacts-bbbb.bin', 'cold/manifest.json', 'seed/artifacts-aaaa.bin', 'seed/manifest.json']);
      expect(after.get('seed/manifest.json')).toEqual(seeded.get('seed/manifest.json'));
      expect(after.get('seed/artifacts-aaaa.bin')).toEqual(seeded.get('seed/artifacts-aaaa.bin'));
      expect(String(await store.getBytes(`${prefix}cold/artifacts-bbbb.bin`))).toBe('compiled-kernels');

      // Jobs still run.
      const id = await enqueue(kafka, config, store, records);
      expect((await waitForStatus(records, id, ['succeeded', 'failed'])).status).toBe('succeeded');
    } finally {
      await first.consumer.stop();
    }

    // Another machine: it starts with everything, compiles nothing, uploads nothing.
    const secondDir = join(work, 'machine-2');
    const second = await startConsumer({ COMPILE_CACHE_DIR: secondDir });
    try {
      const id = await enqueue(kafka, config, store, records);
      expect((await waitForStatus(records, id, ['succeeded', 'failed'])).status).toBe('succeeded');
      const spawn = spawns()[1]!;
      expect(spawn.dir).toBe(join(secondDir, key));
      expect(spawn.files).toEqual({
        'cold/artifacts-bbbb.bin': 'compiled-kernels',
        'cold/manifest.json': '{"format":1,"key":"cold"}',
        'seed/artifacts-aaaa.bin': 'seeded-kernels',
        'seed/manifest.json': '{"format":1,"key":"seed"}',
      });
      expect(second.find('compile cache downloaded')[0]).toMatchObject({ prefix, files: 4 });
      await waitFor(async () => second.find('compile cache: nothing new to upload')[0], 10_000, 'the empty upload');
      expect(second.find('compile cache uploaded')).toEqual([]);
    } finally {
      await second.consumer.stop();
    }
  }, 180_000);

  it('COMPILE_CACHE=off: the runner gets no cache directory; a tuning= of model_names.txt reaches the runner', async () => {
    const before = spawns().length;
    // The runner refuses a tuning it does not know; on a CPU it then serves tiny untuned.
    const { consumer } = await startConsumer({ COMPILE_CACHE: 'off', COMPILE_CACHE_DIR: join(work, 'machine-off') }, { ...tiny, tuning: 'fast' });
    try {
      const id = await enqueue(kafka, config, store, records);
      expect((await waitForStatus(records, id, ['succeeded', 'failed'])).status).toBe('succeeded');
      expect(spawns().slice(before)).toEqual([{ dir: '', files: {}, args: '-m img2img_runner --model tiny --tuning fast --family sd --device cpu' }]);
    } finally {
      await consumer.stop();
    }
  }, 120_000);
});

describe('compile cache with the store down', () => {
  /** The runner as consumer/consumer.ts builds it, with the compile cache on the given store. */
  function runnerOn(down: ObjectStore, overrides: Partial<Config>, log: ReturnType<typeof capturedLogger>) {
    const runnerConfig = { ...config, ...overrides };
    return new Runner({
      model: 'tiny',
      python,
      cwd: resolve(config.RUNNER_DIR),
      device: 'cpu',
      stallMs: 20_000,
      startTimeoutMs: 60_000,
      logger: log.logger,
      compileCache: compileCacheSetup(runnerConfig, tiny, down),
    });
  }

  async function servesOneJob(runner: Runner): Promise<void> {
    const params = { prompt: 'a test', negative_prompt: null, strength: 0.6, steps: 2, guidance_scale: 7.5, seed: 1 };
    const outcome = await runner.run({ id: uniqueName('job'), params: params, image: await pngOf(64, 64) });
    expect(outcome.ok).toBe(true);
  }

  it('an endpoint that refuses connections: the runner starts and serves, its upload fails and is only logged', async () => {
    const refused = testConfig({ S3_ENDPOINT: 'http://127.0.0.1:9' }); // discard port: nothing listens
    const down = new ObjectStore(refused);
    const log = capturedLogger();
    const dir = join(work, 'refused');
    const runner = runnerOn(down, { COMPILE_CACHE_DIR: dir }, log);
    try {
      const info = await runner.ensureStarted();
      expect(info.model).toBe('tiny');
      expect(spawns().at(-1)).toMatchObject({ dir: join(dir, key), files: {} });
      expect(log.find('compile cache download failed; the runner compiles what it lacks')).toHaveLength(1);
      await servesOneJob(runner);
      await waitFor(async () => log.find('compile cache upload failed; the next cold runner compiles again')[0], 20_000, 'the failed upload');
      expect(log.find('compile cache uploaded')).toEqual([]);
      expect(log.find('compile cache: nothing new to upload')).toEqual([]);
    } finally {
      await runner.stop(5000);
      down.close();
    }
  }, 120_000);

  it('an endpoint that accepts and never answers: the download gives up after COMPILE_CACHE_TIMEOUT_MS and the runner starts', async () => {
    const sockets = new Set<Socket>();
    const silent: Server = createServer((socket) => void sockets.add(socket));
    await new Promise<void>((done) => silent.listen(0, '127.0.0.1', done));
    const port = (silent.address() as { port: number }).port;
    const down = new ObjectStore(testConfig({ S3_ENDPOINT: `http://127.0.0.1:${port}` }));
    const log = capturedLogger();
    const runner = runnerOn(down, { COMPILE_CACHE_DIR: join(work, 'silent'), COMPILE_CACHE_TIMEOUT_MS: 1500 }, log);
    try {
      const started = Date.now();
      const info = await runner.ensureStarted();
      expect(sockets.size).toBeGreaterThan(0); // it did ask the store
      // This stand-in waits for the download before it starts, as a compile-first runner's load does;
      // one that compiles in the background would be ready meanwhile (test/unit/compilecache.test.ts).
      expect(info.start_seconds).toBeGreaterThanOrEqual(1.5);
      expect(Date.now() - started).toBeLessThan(1500 + 45_000);
      expect(log.find('compile cache download failed; the runner compiles what it lacks')).toHaveLength(1);
      await servesOneJob(runner);
    } finally {
      await runner.stop(5000);
      down.close();
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  }, 120_000);
});

describe('compile cache of a runner that compiles in the background', () => {
  // Ready first, compiled later: the runner saves its entry only when the compile ends, and
  // says so with a `compiled` frame. A GPU runner's stand-in: it speaks the real protocol
  // (diffusion-py's frames and protocol modules), writes the entry a compile would, then sends the frame.
  const lateRunner = join(work, 'late-runner');
  writeFileSync(
    lateRunner,
    `#!${resolve('diffusion-py/.venv/bin/python')}
import os, sys, time
sys.path.insert(0, ${JSON.stringify(resolve('diffusion-py'))})
from img2img_runner.frames import encode_frame
from img2img_runner.protocol import CompiledFrame, ReadyFrame
out = sys.stdout.buffer
out.write(encode_frame(ReadyFrame(model="tiny", device="cuda:0", dtype="float16", max_batch=2, load_seconds=0.1).header()))
out.flush()
time.sleep(1)
entry = os.path.join(os.environ["IMG2IMG_COMPILE_CACHE"], "late")
os.makedirs(entry, exist_ok=True)
open(os.path.join(entry, "artifacts-cccc.bin"), "wb").write(b"compiled-in-the-background")
open(os.path.join(entry, "manifest.json"), "w").write('{"format":1,"key":"late"}')
out.write(encode_frame(CompiledFrame(ok=True, seconds=1.0).header()))
out.flush()
sys.stdin.buffer.read()
`,
  );
  chmodSync(lateRunner, 0o755);

  it('uploads the entry when the compiled frame comes, not only at ready', async () => {
    const log = capturedLogger();
    const lateConfig = { ...config, COMPILE_CACHE_DIR: join(work, 'late'), COMPILE_CACHE_TAG: uniqueName('late') };
    const setup = compileCacheSetup(lateConfig, tiny, store)!;
    const runner = new Runner({
      model: 'tiny',
      python: lateRunner,
      cwd: resolve(config.RUNNER_DIR),
      device: 'cpu',
      stallMs: 20_000,
      startTimeoutMs: 60_000,
      logger: log.logger,
      compileCache: setup,
    });
    const latePrefix = compileCachePrefix(setup.key);
    try {
      await runner.ensureStarted();
      // At ready the directory held nothing new: nothing to upload yet.
      await waitFor(async () => log.find('compile cache: nothing new to upload')[0], 20_000, 'the upload at ready');
      await waitFor(async () => log.find('runner compiled path in service')[0], 20_000, 'the compiled frame');
      const keys = async () => {
        const found: string[] = [];
        for await (const object of store.list(latePrefix)) found.push(object.key.slice(latePrefix.length));
        return found.sort();
      };
      await waitFor(async () => ((await keys()).length === 2 ? true : undefined), 20_000, 'the late entry in the store');
      expect(await keys()).toEqual(['late/artifacts-cccc.bin', 'late/manifest.json']);
      expect((await store.getBytes(`${latePrefix}late/artifacts-cccc.bin`))?.toString()).toBe('compiled-in-the-background');
    } finally {
      await runner.stop(5000);
      for await (const object of store.list(latePrefix)) await store.delete(object.key);
    }
  }, 60_000);
});
