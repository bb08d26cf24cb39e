// The project runs on Node 24 LTS whatever the machine's own Node is: npm puts the pinned `node`
// package's binary (package.json) first on the PATH of every npm script, vitest included. A run
// on another major means that broke; engines, the package and the images must agree.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const MAJOR = 24;
const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const major = (version: string) => Number(/\d+/.exec(version)?.[0]);

describe('the Node runtime', () => {
  it(`is Node ${MAJOR}`, () => {
    expect(major(process.versions.node), `running on Node ${process.versions.node}`).toBe(MAJOR);
  });

  it('is the major of package.json engines, of its pinned node package and of every image', () => {
    expect(major(pkg.engines.node)).toBe(MAJOR);
    expect(pkg.devDependencies.node).toMatch(new RegExp(`^${MAJOR}\\.\\d+\\.\\d+$`)); // pinned exactly
    for (const dockerfile of ['api/Dockerfile', 'consumer/Dockerfile', 'dispatcher/Dockerfile']) {
      expect(readFileSync(dockerfile, 'utf8'), dockerfile).toMatch(new RegExp(`^ARG NODE_IMAGE=node:${MAJOR}-`, 'm'));
    }
  });
});
