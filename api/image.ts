// The uploaded image: its format sniffed from its bytes, its size checked from its header,
// then normalised to the PNG the runner expects (8-bit sRGB, no alpha, sides a multiple of 8).
// A PNG that already is one only loses its metadata chunks (see png.ts).
import pLimit, { type LimitFunction } from 'p-limit';
import sharp, { type Metadata } from 'sharp';
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

export interface ImageLimits {
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
export function configureSharp(): void {
  sharp.cache(false);
  sharp.concurrency(1);
  sharp.block({ operation: ['VipsForeignLoad'] });
  sharp.unblock({ operation: ['VipsForeignLoadPngBuffer', 'VipsForeignLoadJpegBuffer', 'VipsForeignLoadWebpBuffer'] });
}

export class ImageNormaliser {
  private readonly limit: LimitFunction;

  constructor(private readonly limits: ImageLimits) {
    this.limit = pLimit(limits.concurrency);
  }

  async accept(bytes: Buffer): Promise<AcceptedImage> {
    if (!bytes.length) throw new ValidationError('image', 'the image file is empty');
    const format = sniffFormat(bytes);
    if (!isAccepted(format)) {
      const what = format ? `${format} images are not accepted` : 'the file is not an image of a known format';
      throw new UnsupportedMedia(`${what}; send png, jpeg or webp`, { field: 'image' });
    }
    return this.limit(() => this.normalise(bytes, format));
  }

  private async normalise(bytes: Buffer, format: AcceptedFormat): Promise<AcceptedImage> {
    const header = await this.readHeader(bytes, format);
    const { width, height } = alignedSize(header.width, header.height);
    if (!width || !height) {
      throw new Unprocessable(`the image is ${header.width}x${header.height}; each side needs at least 8 pixels`, {
        field: 'image',
        code: 'image_too_small',
      });
    }
    const plain = format === 'png' ? plainPng(bytes) : undefined;
    return plain ? { png: await this.intact(plain), width, height } : this.reencode(bytes, width, height);
  }

  /** Orient, flatten, convert, crop: the full path, for anything that is not already a plain PNG. */
  private async reencode(bytes: Buffer, width: number, height: number): Promise<AcceptedImage> {
    try {
      // failOn 'error': corrupt or truncated data is refused; mere warnings (odd ancillary chunks) are not.
      const { data, info } = await sharp(bytes, { failOn: 'error', limitInputPixels: this.limits.maxPixels })
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
    const { width, height } = meta.autoOrient;
    this.checkLimits(width, height);
    return { width, height };
  }

  private checkLimits(width: number, height: number): void {
    const { maxSide, maxPixels } = this.limits;
    if (width > maxSide || height > maxSide || width * height > maxPixels) {
      throw new PayloadTooLarge(
        `the image is ${width}x${height}; the limits are ${maxSide} pixels a side and ${maxPixels} pixels in all`,
        { field: 'image', code: 'image_too_large' },
      );
    }
  }
}
