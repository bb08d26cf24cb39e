import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { alignedSize, configureSharp, ImageNormaliser, sniffFormat } from '../../api/image.js';

const bytes = (...values: number[]) => new Uint8Array(values);
const text = (value: string) => new TextEncoder().encode(value);

describe('sniffFormat', () => {
  it.each([
    ['png', bytes(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0)],
    ['jpeg', bytes(0xff, 0xd8, 0xff, 0xe0)],
    ['webp', text('RIFF\0\0\0\0WEBPVP8 ')],
    ['gif', text('GIF89a')],
    ['tiff', bytes(0x49, 0x49, 0x2a, 0x00)],
    ['avif/heif', text('\0\0\0\x1cftypavif')],
    ['svg/xml', text('\ufeff  <svg xmlns="http://www.w3.org/2000/svg"/>')],
    ['svg/xml', text('<?xml version="1.0"?>')],
    [undefined, text('hello')],
    [undefined, bytes()],
    [undefined, bytes(0x89, 0x50, 0x4e)], // a PNG signature cut short
  ])('names %s', (format, input) => {
    expect(sniffFormat(input)).toBe(format);
  });
});

describe('alignedSize', () => {
  it('rounds each side down to a multiple of 8', () => {
    expect(alignedSize(512, 512)).toEqual({ width: 512, height: 512 });
    expect(alignedSize(100, 75)).toEqual({ width: 96, height: 72 });
    expect(alignedSize(7, 15)).toEqual({ width: 0, height: 8 });
  });
});

describe('ImageNormaliser', () => {
  configureSharp();
  const normaliser = new ImageNormaliser({ maxSide: 256, maxPixels: 256 * 128, concurrency: 1 });

  it('turns a 16-bit grey PNG with alpha into 8-bit sRGB without alpha, cropped to the centre', async () => {
    const input = await sharp({ create: { width: 20, height: 11, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0.5 } } })
      .greyscale()
      .toColourspace('grey16')
      .png()
      .toBuffer();
    const accepted = await normaliser.accept(input, 'tiny');
    expect({ width: accepted.width, height: accepted.height }).toEqual({ width: 16, height: 8 });
    expect(await sharp(accepted.png).metadata()).toMatchObject({ format: 'png', channels: 3, depth: 'uchar', space: 'srgb', hasAlpha: false });
  });

  it('strips metadata', async () => {
    const input = await sharp({ create: { width: 16, height: 16, channels: 3, background: 'red' } })
      .jpeg()
      .withMetadata({ exif: { IFD0: { Copyright: 'someone' } } })
      .toBuffer();
    const meta = await sharp((await normaliser.accept(input, 'tiny')).png).metadata();
    expect(meta.exif).toBeUndefined();
    expect(meta.icc).toBeUndefined();
  });

  it('applies both limits: a side, and the pixel count', async () => {
    const tooWide = await sharp({ create: { width: 264, height: 8, channels: 3, background: 'red' } }).png().toBuffer();
    await expect(normaliser.accept(tooWide, 'tiny')).rejects.toMatchObject({ status: 413, field: 'image' });
    const tooMany = await sharp({ create: { width: 256, height: 136, channels: 3, background: 'red' } }).png().toBuffer();
    await expect(normaliser.accept(tooMany, 'tiny')).rejects.toMatchObject({ status: 413, code: 'image_too_large' });
  });

  it('never hands SVG to libvips, even under a PNG name', async () => {
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><image href="file:///etc/passwd"/></svg>');
    await expect(normaliser.accept(svg, 'tiny')).rejects.toMatchObject({ status: 415 });
    // And libvips itself refuses it: its SVG loader is blocked process-wide.
    await expect(sharp(svg).metadata()).rejects.toThrow();
  });
});
