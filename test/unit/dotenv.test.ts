// .env as every entry point reads it: `npm start` and `npm run api|consumer|dispatcher` load it,
// and a variable the caller's environment sets wins over it. Each runs as a user runs it, from a
// copy of the repository's root (its package.json and scripts, the rest linked) that has a .env
// of its own, so the real checkout's .env is never touched.
import { spawnSync } from 'node:child_process';
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
  for (const name of ['start', 'supervisor.ts', 'dotenv.ts']) symlinkSync(join(REPO, 'scripts', name), join(root, 'scripts', name));
  // npm start's servers are not what this is about: its infra step does nothing here.
  writeFileSync(join(root, 'scripts', 'infra'), '#!/usr/bin/env bash\nexit 0\n');
  // Two bad values: the process names each one it read, and exits before it connects anywhere.
  writeFileSync(join(root, '.env'), '# settings of this copy\nLOG_LEVEL=from-dotenv\nS3_BUCKET="Not_A_Bucket"\n');
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

/** `npm <args>` in the copy, with the caller's environment `env` (and a PATH to find npm and node). */
function npm(args: string[], env: Record<string, string>) {
  const result = spawnSync('npm', args, {
    cwd: root,
    encoding: 'utf8',
    env: { PATH: `${join(REPO, 'node_modules', '.bin')}:${process.env.PATH}`, HOME: process.env.HOME ?? root, ...env },
    timeout: 60_000,
  });
  return { code: result.status, output: `${result.stdout}${result.stderr}` };
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
  });
});
