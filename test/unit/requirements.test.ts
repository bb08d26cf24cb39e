// diffusion-py's requirements: what the runner needs to serve (requirements.txt, all the consumer
// image installs) apart from the tools that only test it (requirements-test.txt, which
// scripts/infra installs on top for npm test).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/** The distribution names a requirements file pins, lower case. */
const packages = (path: string) =>
  readFileSync(path, 'utf8')
    .split('\n')
    .map((line) => line.replace(/#.*/, '').trim())
    .filter(Boolean)
    .map((line) => line.split(/[=<>~![ ]/)[0]!.toLowerCase());

describe('diffusion-py requirements', () => {
  const runtime = packages('diffusion-py/requirements.txt');
  const tools = packages('diffusion-py/requirements-test.txt');

  it('keep the test tools out of what the runner needs to serve', () => {
    expect(tools).toEqual(expect.arrayContaining(['pytest', 'schemathesis', 'import-linter']));
    expect(runtime).toEqual(expect.arrayContaining(['torch', 'diffusers', 'transformers']));
    expect(runtime.filter((name) => tools.includes(name))).toEqual([]);
  });

  it('give the consumer image the runtime file only', () => {
    const dockerfile = readFileSync('consumer/Dockerfile', 'utf8');
    expect(dockerfile).toMatch(/pip install [^\n]*-r \/tmp\/requirements\.txt/);
    expect(dockerfile).not.toMatch(/requirements-test/);
  });
});
