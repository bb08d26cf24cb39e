// The uploaded image: its format sniffed from its bytes, its size checked from its header,
// then normalised to the PNG the runner expects (8-bit sRGB, no alpha, sides a multiple of 8).
// A PNG that already is one only loses its metadata chunks (see png.ts).
import pLimit, { type LimitFunction } from 'p-limit';
import sharp, { type FailOnOptions, type Metadata } from 'sharp';
import { computeSize, imageLimitsFor, type ImageLimits } from '../common/params.js';
import { PayloadTooLarge, Unprocessable, UnsupportedMedia, ValidationError } from './errors.js';
import { isIntact, plainPng, type PlainPng } from './png.js';

export const ACCEPTED_FORMATS = ['png', 'jpeg', 'webp'] as const;
export type AcceptedFormat = (typeof ACCEPTED_FORMATS)[number];

const startsWith = (bytes: Uint8Array, signature: number[], at = 0) =>
  bytes.length >= at + signature.length && signature.every((byte, i) => bytes[at + i] === byte);
const ascii = (text: string) => [...text].map((char) => char.charCodeAt(0));

/** Magic numbers of the formats we accept and of the usual ones we refuse (for a clearer message). */
const SIGNATURES: Array<[string, (bytes: Uint8Array) => boolean]> = [
  ['png', (b) => startsWith(b, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])],
  ['jpeg', (b) => startsWith(b, [0xff, 0xd8, 0xff])],
  ['webp', (b) => startsWith(b, ascii('RIFF')) && startsWith(b, ascii('WEBP'), 8)],
  ['gif', (b) => startsWith(b, ascii('GIF8'))],
  ['tiff', (b) => startsWith(b, [0x49, 0x49, 0x2a, 0x00]) || startsWith(b, [0x4d, 0x4d, 0x00, 0x2a])],
  ['avif/heif', (b) => startsWith(b, ascii('ftyp'), 4)],
  ['bmp', (b) => startsWith(b, ascii('BM'))],
  ['pdf', (b) => startsWith(b, ascii('%PDF'))],
  ['jpeg-xl', (b) => startsWith(b, [0xff, 0x0a]) || startsWith(b, ascii('JXL '), 4)],
  ['svg/xml', (b) => /^(\xef\xbb\xbf)?\s*</.test(Buffer.from(b.subarray(0, 256)).toString('latin1'))],
];

/** The format named by the first bytes, whatever the file name or content type claims. */
export function sniffFormat(bytes: Uint8Array): string | undefined {
  return SIGNATURES.find(([, matches]) => matches(bytes))?.[0];
}

const isAccepted = (format: string | undefined): format is AcceptedFormat =>
  (ACCEPTED_FORMATS as readonly string[]).includes(format ?? '');

/** The size a normalised image gets: each side down to a multiple of 8 (the latent grid of the models). */
export const alignedSize = (width: number, height: number) => ({
  width: Math.floor(width / 8) * 8,
  height: Math.floor(height / 8) * 8,
});

/** The deployment's limits on images (config); each model's own, from common/params.json, may be lower. */
export interface DeploymentLimits {
  maxSide: number;
  maxPixels: number;
  /** Images checked or re-encoded at once; the others wait (each holds its pixels in memory). */
  concurrency: number;
}

export interface AcceptedImage {
  png: Buffer;
  width: number;
  height: number;
}

/**
 * Process-wide libvips settings for untrusted input: no operation cache (memory stays
 * bounded), one libvips thread per image (concurrency comes from parallel requests), and
 * every loader blocked except the PNG, JPEG and WebP buffer loaders, so no SVG, PDF, or
 * other loader that could reach the network or the file system ever runs.
 */
/**
 * How strict decoding is. A JPEG whose data runs out before its declared size (a patched frame
 * header: 4096x4096 declared, 64x64 sent) only makes libjpeg warn, and it would then fill the
 * rest with grey: so for JPEG any warning refuses the image. PNG keeps 'error': benign warnings
 * (an odd iCCP profile) are common there, and a truncated PNG is an error already.
 */
const FAIL_ON: Record<AcceptedFormat, FailOnOptions> = { jpeg: 'warning', png: 'error', webp: 'error' };

/** A model's limits within the deployment's: the lower of each. */
export function limitsFor(model: string, limits: Pick<DeploymentLimits, 'maxSide' | 'maxPixels'>): ImageLimits {
  const own = imageLimitsFor(model);
  return { ...own, max_side: Math.min(own.max_side, limits.maxSide), max_pixels: Math.min(own.max_pixels, limits.maxPixels) };
}

/**
 * Width and height (from the header) against a model's limits: the size the image is stored
 * at (sides down to multiples of 8), or the error that refuses it. The runner checks the same
 * (diffusion-py/img2img_runner/jobs.py), so what is accepted here can be computed there.
 */
export function checkSize(width: number, height: number, model: string, limits: ImageLimits): { width: number; height: number } {
  const { max_side: maxSide, max_pixels: maxPixels, min_side: minSide, compute_min_side: computeMin } = limits;
  const within = (w: number, h: number) => w <= maxSide && h <= maxSide && w * h <= maxPixels;
  const bounds = `model ${model} takes at most ${maxSide} pixels a side and ${maxPixels} pixels in all`;
  if (!within(width, height)) {
    throw new PayloadTooLarge(`the image is ${width}x${height}; ${bounds}`, { field: 'image', code: 'image_too_large' });
  }
  const aligned = alignedSize(width, height);
  if (aligned.width < minSide || aligned.height < minSide) {
    throw new Unprocessable(`the image is ${width}x${height}; each side needs at least ${minSide} pixels`, {
      field: 'image',
      code: 'image_too_small',
    });
  }
  const computed = computeSize(aligned.width, aligned.height, limits);
  if (!within(computed.width, computed.height)) {
    throw new Unprocessable(
      `the image is ${width}x${height}, too narrow: a side under ${computeMin} pixels is enlarged to ${computeMin} to compute, ` +
        `which makes it ${computed.width}x${computed.height}, and ${bounds}`,
      { field: 'image', code: 'image_too_narrow' },
    );
  }
  return aligned;
}

export function configureSharp(): void {
  sharp.cache(false);
  sharp.concurrency(1);
  sharp.block({ operation: ['VipsForeignLoad'] });
  sharp.unblock({ operation: ['VipsForeignLoadPngBuffer', 'VipsForeignLoadJpegBuffer', 'VipsForeignLoadWebpBuffer'] });
}

export class ImageNormaliser {
  private readonly limit: LimitFunction;

  constructor(private readonly limits: DeploymentLimits) {
    this.limit = pLimit(limits.concurrency);
  }

  /** The image as the runner of `model` expects it, or the error that refuses it. */
  async accept(bytes: Buffer, model: string): Promise<AcceptedImage> {
    if (!bytes.length) throw new ValidationError('image', 'the image file is empty');
    const format = sniffFormat(bytes);
    if (!isAccepted(format)) {
      const what = format ? `${format} images are not accepted` : 'the file is not an image of a known format';
      throw new UnsupportedMedia(`${what}; send png, jpeg or webp`, { field: 'image' });
    }
    return this.limit(() => this.normalise(bytes, format, model));
  }

  private async normalise(bytes: Buffer, format: AcceptedFormat, model: string): Promise<AcceptedImage> {
    const limits = limitsFor(model, this.limits);
    // A plain PNG's size is its IHDR's (it has no EXIF to turn it): libvips need not read its header.
    const plain = format === 'png' ? plainPng(bytes) : undefined;
    const header = plain ?? (await this.readHeader(bytes, format));
    const { width, height } = checkSize(header.width, header.height, model, limits);
    return plain ? { png: await this.intact(plain), width, height } : this.reencode(bytes, format, width, height, limits.max_pixels);
  }

  /** Orient, flatten, convert, crop: the full path, for anything that is not already a plain PNG. */
  private async reencode(bytes: Buffer, format: AcceptedFormat, width: number, height: number, maxPixels: number): Promise<AcceptedImage> {
    try {
      const { data, info } = await sharp(bytes, { failOn: FAIL_ON[format], limitInputPixels: maxPixels })
        .autoOrient()
        .flatten({ background: '#ffffff' })
        .toColourspace('srgb')
        .resize(width, height, { fit: 'cover', position: 'centre' })
        .removeAlpha()
        .png({ compressionLevel: 3, adaptiveFiltering: false })
        .toBuffer({ resolveWithObject: true });
      return { png: data, width: info.width, height: info.height };
    } catch (error) {
      throw new Unprocessable('the image cannot be decoded (corrupt or truncated)', { field: 'image', cause: error });
    }
  }

  /** A PNG stored as sent must be whole: a truncated or corrupt one is refused like any undecodable image. */
  private async intact(plain: PlainPng): Promise<Buffer> {
    if (await isIntact(plain)) return plain.png;
    throw new Unprocessable('the image cannot be decoded (corrupt or truncated)', { field: 'image' });
  }

  /** Width and height after EXIF orientation, from the header alone: no pixel is decoded before the limits pass. */
  private async readHeader(bytes: Buffer, format: AcceptedFormat): Promise<{ width: number; height: number }> {
    let meta: Metadata;
    try {
      meta = await sharp(bytes, { limitInputPixels: false }).metadata();
    } catch (error) {
      throw new Unprocessable('the image header cannot be read (corrupt or truncated)', { field: 'image', cause: error });
    }
    // libvips chooses its loader by its own sniffing; both must agree.
    if (meta.format !== format) throw new UnsupportedMedia(`the image is not a valid ${format}`, { field: 'image' });
    return meta.autoOrient;
  }
}
