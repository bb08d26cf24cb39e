import { randomBytes } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { isIntact, plainPng } from '../../api/png.js';
import { pngChunk } from '../helpers/api.js';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

function ihdr(width: number, height: number, depth = 8, colourType = 2, interlace = 0): Buffer {
  const data = Buffer.alloc(13);
  data.writeUInt32BE(width, 0);
  data.writeUInt32BE(height, 4);
  data[8] = depth;
  data[9] = colourType;
  data[12] = interlace;
  return pngChunk('IHDR', data);
}

function greyRows(width: number, height: number): Buffer {
  const rows = Buffer.alloc((1 + width * 3) * height, 0x80);
  for (let at = 0; at < rows.length; at += 1 + width * 3) rows[at] = 0; // filter type 0: none
  return rows;
}

/** A PNG built chunk by chunk: rows of filter byte 0 and grey pixels unless told otherwise. */
function build(width: number, height: number, options: { rows?: Buffer; extra?: Buffer[]; header?: Buffer } = {}): Buffer {
  const rows = options.rows ?? greyRows(width, height);
  return Buffer.concat([SIGNATURE, options.header ?? ihdr(width, height), ...(options.extra ?? []), pngChunk('IDAT', deflateSync(rows)), pngChunk('IEND', Buffer.alloc(0))]);
}

describe('plainPng', () => {
  it('takes an 8-bit RGB PNG as it is, and what sharp writes once its pHYs chunk is dropped', async () => {
    const own = build(16, 8);
    expect(plainPng(own)?.png).toBe(own);
    const written = await sharp({ create: { width: 64, height: 32, channels: 3, background: 'teal' } }).png().toBuffer();
    const plain = plainPng(written)!;
    expect(plain.png.length).toBeLessThan(written.length);
    expect(plain.png.includes(Buffer.from('pHYs'))).toBe(false);
    expect(await sharp(plain.png).metadata()).toMatchObject({ width: 64, height: 32, channels: 3 });
    expect(await isIntact(plain)).toBe(true);
  });

  it('drops text chunks, keeps the pixels', async () => {
    const png = build(8, 8, { extra: [pngChunk('tEXt', Buffer.from('Comment\0secret'))] });
    const plain = plainPng(png)!;
    expect(plain.png.includes(Buffer.from('secret'))).toBe(false);
    expect(await isIntact(plain)).toBe(true);
  });

  it.each([
    ['alpha', ihdr(8, 8, 8, 6)],
    ['16-bit', ihdr(8, 8, 16, 2)],
    ['palette', ihdr(8, 8, 8, 3)],
    ['grey', ihdr(8, 8, 8, 0)],
    ['interlaced', ihdr(8, 8, 8, 2, 1)],
    ['unaligned', ihdr(12, 8)],
  ])('leaves %s images to the full path', (_, header) => {
    expect(plainPng(build(8, 8, { header }))).toBeUndefined();
  });

  it('leaves colour-changing chunks and unknown ones to the full path', () => {
    for (const type of ['gAMA', 'iCCP', 'cHRM', 'eXIf', 'tRNS', 'zzZz']) {
      expect(plainPng(build(8, 8, { extra: [pngChunk(type, Buffer.alloc(4))] })), type).toBeUndefined();
    }
  });

  it('refuses a broken layout or a bad CRC', () => {
    const png = build(8, 8);
    expect(plainPng(png.subarray(0, png.length - 20))).toBeUndefined();
    const flipped = Buffer.from(png);
    flipped[40] = flipped[40]! ^ 0xff;
    expect(plainPng(flipped)).toBeUndefined();
  });
});

describe('isIntact', () => {
  const row = 1 + 8 * 3;
  it('refuses pixel data that is short, long, or has a bad filter byte', async () => {
    expect(await isIntact(plainPng(build(8, 8, { rows: Buffer.alloc(row * 7) }))!)).toBe(false);
    expect(await isIntact(plainPng(build(8, 8, { rows: Buffer.alloc(row * 9) }))!)).toBe(false);
    const badFilter = Buffer.alloc(row * 8);
    badFilter[row * 3] = 9;
    expect(await isIntact(plainPng(build(8, 8, { rows: badFilter }))!)).toBe(false);
    expect(await isIntact(plainPng(build(8, 8, { rows: Buffer.alloc(row * 8) }))!)).toBe(true);
  });

  it('refuses a zlib stream cut short even when every CRC is right', async () => {
    const whole = deflateSync(greyRows(8, 8));
    const png = Buffer.concat([SIGNATURE, ihdr(8, 8), pngChunk('IDAT', whole.subarray(0, whole.length - 6)), pngChunk('IEND', Buffer.alloc(0))]);
    expect(await isIntact(plainPng(png)!)).toBe(false);
  });

  it('reads a zlib stream split over several IDAT chunks in their order', async () => {
    const rows = randomBytes((1 + 64 * 3) * 64);
    for (let at = 0; at < rows.length; at += 1 + 64 * 3) rows[at] = 0;
    const whole = deflateSync(rows); // noise: about 12 KB, so each part holds real data
    const parts = [0, 7, 3000, whole.length].slice(1).map((end, i, ends) => whole.subarray(i ? ends[i - 1] : 0, end));
    const split = (order: Buffer[]) => Buffer.concat([SIGNATURE, ihdr(64, 64), ...order.map((part) => pngChunk('IDAT', part)), pngChunk('IEND', Buffer.alloc(0))]);
    expect(await isIntact(plainPng(split(parts))!)).toBe(true);
    expect(await isIntact(plainPng(split([parts[0]!, parts[2]!, parts[1]!]))!)).toBe(false);
    expect(await isIntact(plainPng(split([parts[0]!, parts[2]!]))!)).toBe(false);
  });
});
