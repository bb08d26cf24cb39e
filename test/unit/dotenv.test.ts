// .env as every entry point reads it: `npm start`, `npm run api|consumer|dispatcher` and
// `npm run batch` load it, and a variable the caller's environment sets wins over it. Each runs as a user runs it, from a
// copy of the repository's root (its package.json and scripts, the rest linked) that has a .env
// of its own, so the real checkout's .env is never touched.
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXIT_CONFIG } from '../../common/signals.js';

const REPO = resolve('.');
let root: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'dotenv-'));
  copyFileSync(join(REPO, 'package.json'), join(root, 'package.json'));
  for (const name of ['node_modules', 'api', 'common', 'consumer', 'dispatcher', 'tsconfig.json']) symlinkSync(join(REPO, name), join(root, name));
  mkdirSync(join(root, 'scripts'));
  for (const name of ['start', 'supervisor.ts', 'dotenv.ts', 'batch.ts', 'batch']) symlinkSync(join(REPO, 'scripts', name), join(root, 'scripts', name));
  // npm start's servers are not what this is about: its infra step does nothing here.
  writeFileSync(join(root, 'scripts', 'infra'), '#!/usr/bin/env bash\nexit 0\n');
  // Two bad values: the process names each one it read, and exits before it connects anywhere.
  writeFileSync(join(root, '.env'), '# settings of this copy\nLOG_LEVEL=from-dotenv\nS3_BUCKET="Not_A_Bucket"\nIMG2IMG_API_KEY=key-from-dotenv\n');
  mkdirSync(join(root, 'images'));
  writeFileSync(join(root, 'images', 'a.png'), 'x');
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

const callerEnv = (env: Record<string, string>) => ({ PATH: `${join(REPO, 'node_modules', '.bin')}:${process.env.PATH}`, HOME: process.env.HOME ?? root, ...env });

/** `npm <args>` in the copy, with the caller's environment `env` (and a PATH to find npm and node). */
function npm(args: string[], env: Record<string, string>) {
  const result = spawnSync('npm', args, { cwd: root, encoding: 'utf8', env: callerEnv(env), timeout: 60_000 });
  return { code: result.status, output: `${result.stdout}${result.stderr}` };
}

/** The API key `npm run batch` sends with the caller's environment `env`, as a small server sees it. */
async function batchKey(env: Record<string, string>): Promise<string | undefined> {
  let authorization: string | undefined;
  const server = createServer((request, response) => {
    authorization = request.headers.authorization;
    response.writeHead(200, { 'content-type': 'application/json' }).end('{"models":[]}');
  }).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const child = spawn('npm', ['run', '-s', 'batch', '--', 'images', '--model', 'tiny', '--prompt', 'x', '--api', api], { cwd: root, env: callerEnv(env) });
  const [code] = (await once(child, 'close')) as [number];
  server.close();
  expect(code).toBe(2); // the API serves no model: nothing is sent
  return authorization;
}

describe('.env', () => {
  it.each([
    ['npm run api', ['run', '-s', 'api']],
    ['npm run consumer', ['run', '-s', 'consumer']],
    ['npm run dispatcher', ['run', '-s', 'dispatcher']],
    ['npm start', ['start', '-s']],
  ])('%s reads it, and the caller’s environment wins over it', (_, args) => {
    const { code, output } = npm(args, { LOG_LEVEL: 'warn', SUPERVISE: 'api' });
    expect(output).toMatch(/invalid configuration:\n\s+S3_BUCKET:/); // from .env
    expect(output).not.toMatch(/LOG_LEVEL:/); // .env's bad value, overridden by the caller's
    expect(code).toBe(EXIT_CONFIG);
  }, 60_000);

  it('npm run batch reads it, and the caller’s environment wins over it', async () => {
    expect(await batchKey({})).toBe('Bearer key-from-dotenv');
    expect(await batchKey({ IMG2IMG_API_KEY: 'key-from-caller' })).toBe('Bearer key-from-caller');
  }, 60_000);
});
