// The command lines of the API, the consumer, the dispatcher and the CLIs as a user runs them: an
// unknown flag is one line naming it and exit status 2, never a stack trace; --help is the usage, exit 0.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

function run(entry: string, ...args: string[]) {
  // No settings at all: a process that got past its command line would fail on them instead.
  const result = spawnSync(process.execPath, ['--import', 'tsx', entry, ...args], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, LOG_LEVEL: 'not-a-level' },
    timeout: 30_000,
  });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe.each([
  ['api', 'api/main.ts'],
  ['consumer', 'consumer/main.ts'],
  ['dispatcher', 'dispatcher/main.ts'],
])('%s', (name, entry) => {
  it('answers an unknown flag with one line and exit status 2', () => {
    const { code, stdout, stderr } = run(entry, '--bogus');
    expect(stderr).toBe(`${name}: unknown option '--bogus' (${name} --help lists the options)\n`);
    expect([code, stdout]).toEqual([2, '']);
  }, 30_000);

  it('prints its usage for --help and exits 0', () => {
    const { code, stdout, stderr } = run(entry, '--help');
    expect(stdout).toMatch(new RegExp(`^Usage: ${name} \\[options\\]`));
    expect([code, stderr]).toEqual([0, '']);
  }, 30_000);
});

describe('consumer', () => {
  it('names a flag whose value is missing, in one line', () => {
    const { code, stderr } = run('consumer/main.ts', '--models');
    expect(stderr).toBe("consumer: option '-m, --models <names>' argument missing (consumer --help lists the options)\n");
    expect(code).toBe(2);
  }, 30_000);
});

describe.each([
  ['keys', ['--bogus']],
  ['workers', ['list', '--bogus']],
  ['webhooks', ['--bogus']],
  ['batch', ['.', '--model', 'tiny', '--prompt', 'x', '--bogus']],
])('npm run %s', (name, args) => {
  it('answers an unknown flag with one line and exit status 2', () => {
    const { code, stdout, stderr } = run(`scripts/${name}.ts`, ...args);
    expect(stderr).toBe(`${name}: unknown option '--bogus' (${name} --help lists the options)\n`);
    expect([code, stdout]).toEqual([2, '']);
  }, 30_000);
});
