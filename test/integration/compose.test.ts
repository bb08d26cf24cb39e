// The compose files as Docker Compose itself reads them (`docker compose config`, which needs no
// Docker engine: there is none here to run them), and the first start they describe, run on this
// machine: init's command with init's rendered environment, then the API with the api service's,
// each against the test servers instead of the compose network's.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKafka } from '../../common/kafka.js';
import { KeyStore } from '../../common/keys.js';
import { ObjectStore } from '../../common/storage.js';
import { allTopics } from '../../common/topics.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { ChildService, startApiProcess, type ApiProcess } from '../helpers/processes.js';

interface Mount {
  type: 'bind' | 'volume';
  source: string;
  target: string;
  read_only?: boolean;
}
interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  environment?: Record<string, string | null>;
  ports?: { host_ip?: string; published?: string; target: number }[];
  volumes?: Mount[];
  healthcheck?: { test?: string[]; disable?: boolean };
  depends_on?: Record<string, { condition: string }>;
  deploy?: { replicas?: number; resources?: { reservations?: { devices?: { driver?: string; capabilities?: string[] }[] } } };
  entrypoint?: string[] | null;
  command?: string[] | null;
}
interface Compose {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const repo = process.cwd();
let compose = '';
let emptyEnvFile = '';

/**
 * `docker compose config` of a file: validated, interpolated and printed as JSON by Compose.
 * Hermetic: no .env of the developer's, only the variables given.
 */
function render(file: string | string[], variables: Record<string, string> = {}): Compose {
  const files = [file].flat().flatMap((name) => ['-f', name]);
  const result = spawnSync(compose, [...files, '--env-file', emptyEnvFile, 'config', '--format', 'json'], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, HOME: process.env.HOME, COMPOSE_PROJECT_NAME: 'img2img', ...variables },
  });
  if (result.status !== 0) throw new Error(`docker compose ${files.join(' ')} config failed:\n${result.stderr}`);
  return JSON.parse(result.stdout) as Compose;
}

const mounts = (service: ComposeService) => Object.fromEntries((service.volumes ?? []).map((mount) => [mount.target, mount]));

beforeAll(() => {
  // Built from its Go module by `scripts/infra install compose` (npm test installs it).
  compose = execFileSync('bash', ['scripts/infra', 'bin', 'compose'], { encoding: 'utf8' }).trim();
  emptyEnvFile = join(mkdtempSync(join(tmpdir(), 'compose-')), 'empty.env');
  writeFileSync(emptyEnvFile, '');
}, 600_000);

describe('docker compose config', () => {
  it('docker-compose.yaml alone is the whole system: the infra servers it includes, init, API, consumer, dispatcher, Nginx, Prometheus, Grafana', () => {
    const { services, volumes } = render('docker-compose.yaml');
    expect(Object.keys(services).sort()).toEqual(['api', 'consumer', 'dispatcher', 'grafana', 'init', 'kafka', 'minio', 'minio-init', 'nginx', 'prometheus', 'redis']);
    expect(Object.keys(volumes ?? {}).sort()).toEqual(['auth', 'grafana-data', 'kafka-data', 'minio-data', 'prometheus-data', 'redis-data']);
    for (const name of ['kafka', 'minio', 'redis', 'nginx', 'prometheus', 'grafana']) {
      expect(services[name]!.healthcheck?.test, `${name} has a healthcheck`).toBeDefined();
    }
    // The API's is its image's (Nginx waits for it): compose must not switch it off.
    expect(readFileSync('api/Dockerfile', 'utf8')).toMatch(/^HEALTHCHECK .*\/readyz/ms);
    expect(services.api!.healthcheck?.disable).not.toBe(true);
  });

  it('docker-compose-infra.yaml alone: Kafka in KRaft mode, MinIO with its bucket, Redis, each on loopback for native processes', () => {
    const { services, volumes } = render('docker-compose-infra.yaml');
    expect(Object.keys(services).sort()).toEqual(['kafka', 'minio', 'minio-init', 'redis']);
    expect(Object.keys(volumes ?? {}).sort()).toEqual(['kafka-data', 'minio-data', 'redis-data']);

    const kafka = services.kafka!;
    expect(kafka.image).toMatch(/^apache\/kafka:3\.9\.\d+$/);
    expect(kafka.environment?.KAFKA_PROCESS_ROLES).toBe('broker,controller');
    expect(Object.keys(kafka.environment ?? {}).filter((name) => /ZOOKEEPER/.test(name))).toEqual([]);
    expect(kafka.environment?.KAFKA_AUTO_CREATE_TOPICS_ENABLE).toBe('false');
    expect(kafka.environment?.KAFKA_ADVERTISED_LISTENERS).toContain('127.0.0.1:9092');

    const bucket = services['minio-init']!;
    expect(bucket.depends_on?.minio?.condition).toBe('service_healthy');
    expect(JSON.stringify([bucket.entrypoint, bucket.command])).toContain('mc mb --ignore-existing');
    expect(mounts(services.redis!)['/data']?.source).toBe('redis-data');
    expect([services.redis!.command].flat().join(' ')).toMatch(/--appendonly yes/);

    // The native processes' default addresses (common/config.ts), published on loopback only.
    const published = Object.values(services).flatMap((service) => service.ports ?? []);
    expect(published.map((port) => `${port.host_ip}:${port.published}`).sort()).toEqual(['127.0.0.1:6379', '127.0.0.1:9000', '127.0.0.1:9001', '127.0.0.1:9092']);
  });

  it('starts in order: the bucket, then init, then the API replicas, then Nginx', () => {
    const { services } = render('docker-compose.yaml');
    const { init, api, consumer, dispatcher, nginx } = services;
    expect(init!.depends_on?.['minio-init']?.condition).toBe('service_completed_successfully');
    expect(api!.depends_on).toMatchObject({
      init: { condition: 'service_completed_successfully' },
      kafka: { condition: 'service_healthy' },
      redis: { condition: 'service_healthy' },
    });
    expect(nginx!.depends_on?.api?.condition).toBe('service_healthy');
    for (const service of [consumer!, dispatcher!]) {
      expect(service.depends_on?.kafka?.condition).toBe('service_healthy');
      expect(service.depends_on?.['minio-init']?.condition).toBe('service_completed_successfully');
    }
    // init writes the pepper into the volume the replicas only read.
    expect(mounts(init!)['/var/lib/img2img/auth']).toMatchObject({ type: 'volume', source: 'auth' });
    expect(mounts(init!)['/var/lib/img2img/auth']?.read_only).not.toBe(true);
    expect(mounts(api!)['/var/lib/img2img/auth']).toMatchObject({ type: 'volume', source: 'auth', read_only: true });
  });

  it('runs API replicas behind Nginx and a GPU consumer, built from the repo', () => {
    const { services } = render('docker-compose.yaml');
    const { api, consumer, nginx } = services;
    expect(api!.build?.dockerfile).toBe('api/Dockerfile');
    expect(api!.deploy?.replicas).toBeGreaterThanOrEqual(2);
    expect(api!.ports ?? [], 'replicas cannot share a host port: Nginx publishes the API').toEqual([]);
    expect(nginx!.ports?.map((port) => [port.published, port.target])).toEqual([['8000', 80]]);

    expect(consumer!.build?.dockerfile).toBe('consumer/Dockerfile');
    const [gpu] = consumer!.deploy?.resources?.reservations?.devices ?? [];
    expect(gpu).toMatchObject({ driver: 'nvidia', capabilities: ['gpu'] });
    expect(mounts(consumer!)['/models']?.read_only).toBe(true);
    expect(mounts(consumer!)['/app/model_names.txt']).toMatchObject({ source: join(repo, 'model_names.txt'), read_only: true });
    expect(consumer!.environment?.CONSUMER_METRICS_HOST, 'the metrics server must listen beyond the container').toBe('0.0.0.0');
    expect(consumer!.environment?.WORKER_GATEWAY_HOST, 'remote workers reach the gateway from outside the container').toBe('0.0.0.0');
    expect(consumer!.environment?.WORKER_GATEWAY, 'the gateway is opt-in').toBe('off');
  });

  it('docker-compose.cpu.yaml on top: the consumer without a GPU reservation, on the CPU, the rest unchanged', () => {
    const gpu = render('docker-compose.yaml');
    const cpu = render(['docker-compose.yaml', 'docker-compose.cpu.yaml']);
    expect(cpu.services.consumer!.deploy?.resources?.reservations).toBeUndefined();
    expect(cpu.services.consumer!.environment?.RUNNER_DEVICE).toBe('cpu');
    expect(Object.keys(cpu.services).sort()).toEqual(Object.keys(gpu.services).sort());
    expect(cpu.services.api).toEqual(gpu.services.api);
  });

  it('mounts only files that exist in the repo, and builds from Dockerfiles that exist', () => {
    const { services } = render('docker-compose.yaml');
    for (const [name, service] of Object.entries(services)) {
      for (const mount of service.volumes ?? []) {
        if (mount.type !== 'bind' || mount.target === '/models') continue;
        expect(existsSync(mount.source), `${name} mounts ${mount.source}`).toBe(true);
      }
      if (service.build) expect(existsSync(join(service.build.context, service.build.dockerfile)), `${name}'s ${service.build.dockerfile}`).toBe(true);
    }
  });
});

// ---------------------------------------------------------------- the first start, natively

/** The ENV of a Dockerfile's last stage: what every container of the image starts with. */
function imageEnv(dockerfile: string): Record<string, string> {
  const text = readFileSync(dockerfile, 'utf8').replace(/\\\n\s*/g, ' ');
  const lastStage = text.slice(text.lastIndexOf('\nFROM '));
  // KEY=value or KEY="value with spaces", as Docker reads them.
  const pairs = [...lastStage.matchAll(/^ENV\s+(.+)$/gm)].flatMap((match) => [...match[1]!.matchAll(/(\w+)=(?:"([^"]*)"|(\S*))/g)]);
  return Object.fromEntries(pairs.map(([, key, quoted, bare]) => [key!, quoted ?? bare ?? '']));
}

describe('the first start docker-compose.yaml describes, run with its rendered environments', () => {
  const config = testConfig({ TOPIC_PREFIX: uniqueName('compose') });
  const bucket = uniqueName('compose').toLowerCase();
  let services: Compose['services'];
  let dir = '';
  let api: ApiProcess | undefined;
  let token = '';

  /**
   * A service's container environment (its image's ENV, then compose's) as this machine sees it:
   * the compose network's addresses become the test servers', each mount target its source (a
   * named volume a folder of its own).
   */
  function environment(name: string): Record<string, string> {
    const service = services[name]!;
    const env = { ...imageEnv(service.build!.dockerfile), ...service.environment } as Record<string, string>;
    const swaps: [string, string][] = [
      ['kafka:19092', config.KAFKA_BROKERS.join(',')],
      ['http://minio:9000', config.S3_ENDPOINT],
      ['redis://redis:6379', config.REDIS_URL],
      ...(service.volumes ?? []).map((mount): [string, string] => [mount.target, mount.type === 'volume' ? join(dir, mount.source) : mount.source]),
    ];
    for (const [from, to] of swaps) {
      const names = Object.keys(env).filter((key) => env[key]!.startsWith(from) || env[key] === from);
      for (const key of names) env[key] = to + env[key]!.slice(from.length);
    }
    return env;
  }

  /** The service's own command, with the compiled keys CLI swapped for its TypeScript source. */
  function runInit(): { status: number | null; output: string } {
    const [node, script, ...args] = services.init!.command!;
    expect([node, script]).toEqual(['node', 'scripts/keys.js']);
    // No .env in the container: run where none is, with nothing but the rendered environment.
    const tsx = pathToFileURL(join(repo, 'node_modules/tsx/dist/loader.mjs')).href;
    const result = spawnSync(process.execPath, ['--import', tsx, join(repo, 'scripts/keys.ts'), ...args], {
      cwd: dir,
      encoding: 'utf8',
      env: { PATH: process.env.PATH, ...environment('init') },
      timeout: 60_000,
    });
    return { status: result.status, output: result.stdout + result.stderr };
  }

  beforeAll(() => {
    // The test's own bucket, through the same ${S3_BUCKET} a .env would set.
    services = render('docker-compose.yaml', { S3_BUCKET: bucket }).services;
    dir = mkdtempSync(join(tmpdir(), 'compose-volumes-'));
    for (const mount of services.init!.volumes!.filter((volume) => volume.type === 'volume')) mkdirSync(join(dir, mount.source), { mode: 0o700 });
  }, 600_000);

  afterAll(async () => {
    await api?.service.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
    const admin = createKafka(config, uniqueName('cleanup')).admin();
    await admin.connect();
    await admin.deleteTopics({ topics: allTopics(config.TOPIC_PREFIX, ['tiny']) }).catch(() => {});
    await admin.disconnect();
  }, 30_000);

  it('without init, the API refuses to start and names the missing pepper file (exit 78)', async () => {
    const env = { ...environment('api'), TOPIC_PREFIX: config.TOPIC_PREFIX, API_HOST: '127.0.0.1', API_PORT: '0' };
    const child = new ChildService('api', process.execPath, ['--import', 'tsx', 'api/main.ts'], { env });
    await child.exited;
    expect(child.child.exitCode, child.tail()).toBe(78);
    expect(child.log).toMatch(/AUTH_PEPPER_FILE: cannot read .*auth\/pepper \(ENOENT\)/);
  }, 60_000);

  it('init makes the pepper and prints an admin key once; then the API starts with its environment and takes that key', async () => {
    const first = runInit();
    expect(first.status, first.output).toBe(0);
    token = /^(i2i_\w{12}_[\w-]{43})$/m.exec(first.output)?.[1] ?? '';
    expect(token, first.output).not.toBe('');
    expect(first.output).toContain(`Authorization: Bearer ${token}`);
    const pepperFile = join(dir, 'auth', 'pepper');
    expect(readFileSync(pepperFile, 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);

    // The rendered environment but for its addresses, mounts and the test's own topic names.
    const env = environment('api');
    expect(env).toMatchObject({
      KAFKA_BROKERS: config.KAFKA_BROKERS.join(','),
      S3_ENDPOINT: config.S3_ENDPOINT,
      S3_BUCKET: bucket,
      REDIS_URL: config.REDIS_URL,
      AUTH: 'on',
      AUTH_PEPPER_FILE: pepperFile,
      MODEL_NAMES_FILE: join(repo, 'model_names.txt'),
    });
    api = await startApiProcess({ ...env, TOPIC_PREFIX: config.TOPIC_PREFIX });
    // docs/DEPLOY.md's first request: an image and a prompt, with the key and without.
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#4477aa' } }).png().toBuffer();
    const submit = (headers: Record<string, string>) => {
      const form = new FormData();
      form.append('image', new Blob([new Uint8Array(png)], { type: 'image/png' }), 'photo.png');
      return fetch(`${api!.url}/api/diffusion?model_name=tiny&prompt=a+red+fox`, { method: 'POST', body: form, headers });
    };
    expect((await submit({})).status).toBe(401);
    const accepted = await submit({ authorization: `Bearer ${token}` });
    expect(accepted.status, await accepted.clone().text()).toBe(202);
  }, 120_000);

  it('init run again changes nothing and prints no key', () => {
    const pepper = readFileSync(join(dir, 'auth', 'pepper'), 'utf8');
    const again = runInit();
    expect(again.status, again.output).toBe(0);
    expect(again.output).toContain('nothing to do');
    expect(again.output).not.toMatch(/i2i_\w{12}_/);
    expect(readFileSync(join(dir, 'auth', 'pepper'), 'utf8')).toBe(pepper);
  }, 60_000);

  it('with the pepper lost (the auth volume deleted, the bucket kept), init makes a new pepper and admin key, and says the old keys no longer verify', async () => {
    rmSync(join(dir, 'auth', 'pepper'));
    const after = runInit();
    expect(after.status, after.output).toBe(0);
    expect(after.output).toContain('keys made with an earlier pepper no longer verify');
    const fresh = /^(i2i_\w{12}_[\w-]{43})$/m.exec(after.output)?.[1] ?? '';
    expect(fresh, after.output).not.toBe('');

    const store = new ObjectStore({ ...config, S3_BUCKET: bucket });
    const keys = new KeyStore(store, readFileSync(join(dir, 'auth', 'pepper'), 'utf8').trim());
    expect(await keys.verify(fresh)).toMatchObject({ role: 'admin', tenant: 'admin' });
    expect(await keys.verify(token)).toBeUndefined();
  }, 60_000);
});
