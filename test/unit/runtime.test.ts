// The project runs on Node 24 LTS whatever the machine's own Node is: npm puts the pinned `node`
// package's binary (package.json) first on the PATH of every npm script, vitest included. A run
// on another major means that broke; engines, the package and the images must agree.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { API_NODE_FLAGS } from '../../common/nodeflags.js';

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

  it('gives the API image the V8 flags the API runs with elsewhere', () => {
    const options = /^\s*NODE_OPTIONS="([^"]*)"/m.exec(readFileSync('api/Dockerfile', 'utf8'))?.[1]?.split(/\s+/) ?? [];
    for (const flag of API_NODE_FLAGS) expect(options, 'api/Dockerfile NODE_OPTIONS').toContain(flag);
  });
});
