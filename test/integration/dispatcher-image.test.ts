// dispatcher/Dockerfile without a Docker engine: its shape (stages, Node 24, non-root, no Python),
// and its build followed step by step on this machine: only the files its build stage copies, the
// tsconfig it writes, tsc, then the runtime stage's layout, where `node dispatcher/main.js --help`
// must start (every module it imports was compiled or copied) and every package the compiled code
// imports must be a production dependency (the runtime stage has `npm ci --omit=dev` only).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const DOCKERFILE = 'dispatcher/Dockerfile';
const text = readFileSync(DOCKERFILE, 'utf8').replace(/^\s*#.*$/gm, '');
const stages = text.split(/^FROM\s+/m).slice(1);
const stage = (name: string) => stages.find((body) => new RegExp(`^\\S+ AS ${name}\\b`).test(body)) ?? '';
const runtime = stages.at(-1)!;
/** A stage's COPY instructions from the build context (not --from another stage): sources and destination. */
const copies = (body: string) =>
  [...body.matchAll(/^COPY (?!--from)(.+)$/gm)].map((match) => {
    const parts = match[1]!.trim().split(/\s+/);
    return { sources: parts.slice(0, -1), destination: parts.at(-1)! };
  });
const dirs: string[] = [];
const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(dir);
  return dir;
};

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe('dispatcher/Dockerfile', () => {
  it('is multi-stage on Node 24, runs as node, has no Python or torch, and starts the dispatcher with its metrics on all interfaces', () => {
    expect(stages.length).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/^ARG NODE_IMAGE=node:24-[-\w.]*$/m);
    expect(runtime).toMatch(/^USER node$/m);
    expect(text).not.toMatch(/python|pip |torch|requirements\.txt/i);
    expect(stage('deps')).toMatch(/npm ci --omit=dev/);
    expect(runtime).toMatch(/DISPATCHER_METRICS_HOST=0\.0\.0\.0/);
    expect(runtime).toMatch(/^CMD \["node", "dispatcher\/main\.js"\]$/m);
  });

  it('is the image the chart and docker-compose.yaml name for the dispatcher', () => {
    expect(readFileSync('deploy/helm/img2img/values.yaml', 'utf8')).toMatch(/^ {2}dispatcher:\n(?: {4}#.*\n)* {4}repository: img2img-dispatcher$/m);
    expect(readFileSync('docker-compose.yaml', 'utf8')).toMatch(/^ {2}dispatcher:\n {4}build:\n {6}context: \.\n {6}dockerfile: dispatcher\/Dockerfile\n {4}image: img2img-dispatcher$/m);
  });

  it('builds from the files its build stage copies alone, and the runtime layout starts with production dependencies only', () => {
    const build = tempDir('dispatcher-build-');
    for (const { sources, destination } of copies(stage('build'))) {
      for (const source of sources) cpSync(source, join(build, destination.endsWith('/') && !source.endsWith('/') ? join(destination, source.split('/').at(-1)!) : destination), { recursive: true });
    }
    const tsconfig = /echo '(\{.*\})' >tsconfig\.build\.json/.exec(stage('build'))?.[1];
    expect(tsconfig, 'the build stage writes tsconfig.build.json').toBeDefined();
    writeFileSync(join(build, 'tsconfig.build.json'), tsconfig!);
    symlinkSync(resolve('node_modules'), join(build, 'node_modules'));
    const tsc = spawnSync(resolve('node_modules/.bin/tsc'), ['-p', 'tsconfig.build.json', '--outDir', 'dist'], { cwd: build, encoding: 'utf8' });
    expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);

    // The runtime stage: dist/ at the root, then what it copies from the context.
    const app = tempDir('dispatcher-app-');
    cpSync(join(build, 'dist'), app, { recursive: true });
    for (const { sources, destination } of copies(runtime)) {
      for (const source of sources) cpSync(source, join(app, destination.endsWith('/') ? join(destination, source.split('/').at(-1)!) : destination), { recursive: true });
    }
    symlinkSync(resolve('node_modules'), join(app, 'node_modules'));
    const help = spawnSync(process.execPath, ['dispatcher/main.js', '--help'], { cwd: app, encoding: 'utf8', env: { ...process.env, NODE_ENV: 'production' } });
    expect(help.status, help.stderr).toBe(0);
    expect(help.stdout).toContain('Sends the signed webhooks');

    const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> };
    const imported = new Set(
      jsFiles(app)
        .flatMap((file) => [...readFileSync(file, 'utf8').matchAll(/^import .*?from '([^'.][^']*)';$|^import '([^'.][^']*)';$/gm)].map((match) => match[1] ?? match[2]!))
        .filter((name) => !name.startsWith('node:') && !builtinModules.includes(name))
        .map((name) => (name.startsWith('@') ? name.split('/').slice(0, 2).join('/') : name.split('/')[0]!)),
    );
    expect(imported.size).toBeGreaterThan(3);
    for (const name of imported) expect(pkg.dependencies, `${name} is imported at run time`).toHaveProperty([name]);
  }, 120_000);
});

function jsFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile() && entry.name.endsWith('.js') && !entry.parentPath.includes('node_modules'))
    .map((entry) => join(entry.parentPath, entry.name));
}
