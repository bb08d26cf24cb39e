// The declared runner protocol against the shared vectors (diffusion-py's protocol.py is
// checked against the same file): every message kind has a vector, and every vector is a
// valid message of its kind.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { FromRunner, ProtocolError, readRunnerFrame, ToRunner } from '../../common/protocol.js';

interface Vector {
  name: string;
  header: Record<string, unknown>;
  payload_hex: string;
}
const vectors = JSON.parse(readFileSync('test/vectors/frames.json', 'utf8')) as Vector[];
const toRunner = ToRunner.options.map((option) => option.shape.type.value as string);
const fromRunner = FromRunner.options.map((option) => option.shape.type.value as string);

describe('runner protocol', () => {
  it('has a shared vector for every message kind', () => {
    const kinds = new Set(vectors.map((vector) => vector.header.type));
    for (const kind of [...toRunner, ...fromRunner]) expect(kinds, kind).toContain(kind);
  });

  it.each(vectors.map((v) => [v.name, v] as const))('parses %s as its kind', (_name, { header }) => {
    const schema = toRunner.includes(header.type as string) ? ToRunner : FromRunner;
    expect(schema.parse(header)).toEqual(header);
  });

  it('refuses a known frame that breaks its schema, ignores an unknown kind', () => {
    const payload = Buffer.alloc(0);
    expect(() => readRunnerFrame({ header: { v: 1, type: 'progress', id: 'a', step: '3', total: 10 }, payload })).toThrow(ProtocolError);
    expect(() => readRunnerFrame({ header: { v: 1, type: 'ready', model: 'tiny' }, payload })).toThrow(ProtocolError);
    expect(readRunnerFrame({ header: { v: 1, type: 'telemetry', gpu_temp: 61 }, payload })).toBeUndefined();
    expect(readRunnerFrame({ header: { v: 1, type: 'pong' }, payload })?.message).toEqual({ v: 1, type: 'pong' });
  });
});
