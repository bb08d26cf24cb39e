// The image limits of each model (common/params.json) as the API applies them: the same
// vectors as the runner's test (diffusion-py/tests/test_jobs.py), so what the API accepts the
// runner can compute; and decoding refuses images whose data does not match their header.
import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { checkSize, configureSharp, ImageNormaliser, limitsFor } from '../../api/image.js';
import { imageLimitsFor, PARAMS } from '../../common/params.js';
import { jpegWithFrameSize, noisePng } from '../helpers/api.js';

interface SizeCase {
  model: string;
  width: number;
  height: number;
  compute: [number, number] | null;
}
const { cases } = JSON.parse(readFileSync('test/vectors/image-sizes.json', 'utf8')) as { cases: SizeCase[] };
const config = { maxSide: 4096, maxPixels: 16 * 1024 * 1024 };

describe('checkSize, per model', () => {
  it.each(cases)('$model $width x $height: $compute', ({ model, width, height, compute }) => {
    const check = () => checkSize(width, height, model, limitsFor(model, config));
    if (compute) expect(check()).toEqual({ width, height });
    else expect(check).toThrow(expect.objectContaining({ field: 'image' }));
  });

  it('takes the lower of the model’s limit and the deployment’s', () => {
    expect(limitsFor('tiny', config).max_pixels).toBe(PARAMS.model_defaults.tiny!.image!.max_pixels);
    expect(limitsFor('other', { maxSide: 1024, maxPixels: 1000 })).toMatchObject({ max_side: 1024, max_pixels: 1000 });
    expect(imageLimitsFor('other')).toEqual(PARAMS.image);
  });

  it('answers 413 over the limits, 422 too small or too narrow to compute, each naming the image', () => {
    const tiny = limitsFor('tiny', config);
    expect(() => checkSize(2048, 2048, 'tiny', tiny)).toThrow(expect.objectContaining({ status: 413, code: 'image_too_large', field: 'image' }));
    expect(() => checkSize(2048, 2048, 'tiny', tiny)).toThrow(/model tiny takes at most 4096 pixels a side and 1048576 pixels in all/);
    expect(() => checkSize(7, 64, 'tiny', tiny)).toThrow(expect.objectContaining({ status: 422, code: 'image_too_small' }));
    expect(() => checkSize(4096, 8, 'other', limitsFor('other', config))).toThrow(
      expect.objectContaining({ status: 422, code: 'image_too_narrow', field: 'image' }),
    );
  });
});

describe('decoding refuses an image whose data does not match its header', () => {
  configureSharp();
  const normaliser = new ImageNormaliser({ ...config, concurrency: 1 });
  const refused = { status: 422, field: 'image', code: 'unprocessable' };
  const noise = (width: number, height: number) =>
    sharp({ create: { width, height, channels: 3, background: '#000', noise: { type: 'gaussian', mean: 128, sigma: 40 } } });

  it('a 64x64 JPEG whose frame header declares 2048x2048', async () => {
    const small = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#c04020' } }).jpeg().toBuffer();
    const patched = jpegWithFrameSize(small, 2048, 2048);
    expect((await sharp(patched).metadata()).width).toBe(2048); // the header alone looks fine
    await expect(normaliser.accept(patched, 'other')).rejects.toMatchObject(refused);
  });

  it.each([
    ['baseline JPEG', () => noise(256, 256).jpeg().toBuffer()],
    ['progressive JPEG', () => noise(256, 256).jpeg({ progressive: true }).toBuffer()],
    ['lossy WebP', () => noise(256, 256).webp().toBuffer()],
    ['lossless WebP', () => noise(256, 256).webp({ lossless: true }).toBuffer()],
    ['PNG', () => noisePng(256, 256)],
    ['interlaced PNG', () => noise(256, 256).png({ progressive: true }).toBuffer()],
  ])('a truncated %s', async (_name, make) => {
    const whole = await make();
    await expect(normaliser.accept(whole, 'other')).resolves.toMatchObject({ width: 256, height: 256 });
    for (const keep of [0.5, 0.9]) {
      await expect(normaliser.accept(whole.subarray(0, Math.floor(whole.length * keep)), 'other')).rejects.toMatchObject({
        status: 422,
        field: 'image',
      });
    }
  });

  it('still accepts a JPEG with EXIF and an ICC profile', async () => {
    const jpeg = await noise(64, 64).jpeg().withMetadata({ exif: { IFD0: { Copyright: 'x' } } }).toBuffer();
    await expect(normaliser.accept(jpeg, 'tiny')).resolves.toMatchObject({ width: 64, height: 64 });
  });
});
