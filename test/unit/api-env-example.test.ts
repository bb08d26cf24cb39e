// .env.example documents every setting: a variable added to common/config.ts without a line
// there fails here, and the defaults written there are the schema's own.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigSchema, loadConfig } from '../../common/config.js';

const lines = readFileSync('.env.example', 'utf8').split('\n');
const documented = new Map(
  lines.filter((line) => /^[A-Z0-9_]+=/.test(line)).map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
);

describe('.env.example', () => {
  it('lists every variable of ConfigSchema, and nothing else', () => {
    expect([...documented.keys()].sort()).toEqual(Object.keys(ConfigSchema.shape).sort());
  });

  it('shows the defaults: loading it gives the same config as an empty environment', () => {
    expect(loadConfig(Object.fromEntries(documented))).toEqual(loadConfig({}));
  });

  it('explains every variable in a comment above it', () => {
    for (const name of documented.keys()) {
      const index = lines.findIndex((line) => line.startsWith(`${name}=`));
      expect(lines[index - 1]!.startsWith('#'), name).toBe(true);
    }
  });
});
