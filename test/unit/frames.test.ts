// The TypeScript side of the runner protocol against the vectors that diffusion-py's
// tests check too: both sides must produce and read the same bytes.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { encodeFrame, FrameDecoder } from '../../common/frames.js';

interface Vector {
  name: string;
  header: Record<string, unknown>;
  payload_hex: string;
  frame_hex: string;
}
const vectors = JSON.parse(readFileSync('test/vectors/frames.json', 'utf8')) as Vector[];

describe('frames', () => {
  it.each(vectors.map((v) => [v.name, v] as const))('encodes %s to the shared bytes', (_name, vector) => {
    expect(encodeFrame(vector.header, Buffer.from(vector.payload_hex, 'hex')).toString('hex')).toBe(vector.frame_hex);
  });

  it('decodes every vector, even when the bytes arrive one at a time', () => {
    const all = Buffer.concat(vectors.map((v) => Buffer.from(v.frame_hex, 'hex')));
    const decoder = new FrameDecoder();
    const frames = [...all].flatMap((byte) => decoder.push(Buffer.from([byte])));
    expect(frames.map((f) => f.header)).toEqual(vectors.map((v) => v.header));
    expect(frames.map((f) => f.payload.toString('hex'))).toEqual(vectors.map((v) => v.payload_hex));
    expect(decoder.buffered).toBe(0);
  });

  it('keeps a truncated frame pending and refuses an absurd header length', () => {
    const decoder = new FrameDecoder();
    const frame = Buffer.from(vectors[0]!.frame_hex, 'hex');
    expect(decoder.push(frame.subarray(0, frame.length - 1))).toEqual([]);
    expect(decoder.buffered).toBe(frame.length - 1);
    expect(() => new FrameDecoder().push(Buffer.from([0xff, 0xff, 0xff, 0xff]))).toThrow(/exceeds/);
  });
});
