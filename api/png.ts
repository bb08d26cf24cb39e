// The fast path of normalisation: a PNG that already is what the runner wants (8-bit RGB,
// not interlaced, sides a multiple of 8, nothing that changes its colours) is stored with its
// pixel data as sent, minus its metadata chunks, instead of being decoded and re-encoded.
// Its integrity is checked the way a decoder would (chunk CRCs, the zlib stream and its
// checksum, the exact size of the rows, their filter bytes) at a fraction of the cost of a
// libvips decode, which matters on a small machine: see bench/NOTES.md, "API".
import { finished } from 'node:stream/promises';
import { crc32, createInflate } from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Chunks that carry no colour information: dropped on the fast path (text, time, physical size, the sRGB flag). */
const METADATA = new Set(['tEXt', 'zTXt', 'iTXt', 'tIME', 'pHYs', 'sRGB']);
const KEPT = new Set(['IHDR', 'IDAT', 'IEND']);
const BYTES_PER_PIXEL = 3; // 8-bit RGB

interface Chunk {
  type: string;
  /** The whole chunk: length, type, data and CRC. */
  bytes: Buffer;
  data: Buffer;
}

export interface PlainPng {
  /** The PNG reduced to IHDR, IDAT and IEND. */
  png: Buffer;
  width: number;
  height: number;
  /** The concatenated IDAT data: one zlib stream. */
  compressed: Buffer;
}

/** The chunks of a PNG, or undefined when its layout or a CRC is broken (the slow path then reports why). */
function chunks(png: Buffer): Chunk[] | undefined {
  const list: Chunk[] = [];
  for (let at = SIGNATURE.length; at < png.length; ) {
    if (at + 12 > png.length) return undefined;
    const length = png.readUInt32BE(at);
    const end = at + 12 + length;
    if (end > png.length || crc32(png.subarray(at + 4, end - 4)) !== png.readUInt32BE(end - 4)) return undefined;
    list.push({ type: png.toString('latin1', at + 4, at + 8), bytes: png.subarray(at, end), data: png.subarray(at + 8, end - 4) });
    at = end;
  }
  return list;
}

/**
 * The PNG reduced to IHDR, IDAT and IEND when it needs no other change; undefined when it
 * must go through the full normalisation (other colour types or depths, alpha, palette,
 * gamma or ICC chunks, EXIF orientation, interlacing, unaligned sides, unknown chunks).
 */
export function plainPng(png: Buffer): PlainPng | undefined {
  if (!png.subarray(0, 8).equals(SIGNATURE)) return undefined;
  const list = chunks(png);
  const header = list?.[0];
  if (!list || header?.type !== 'IHDR' || header.data.length !== 13 || list.at(-1)?.type !== 'IEND') return undefined;
  const [width, height] = [header.data.readUInt32BE(0), header.data.readUInt32BE(4)];
  const [depth, colourType, interlace] = [header.data[8], header.data[9], header.data[12]];
  if (depth !== 8 || colourType !== 2 || interlace !== 0 || width % 8 || height % 8 || !width || !height) return undefined;
  if (!list.every((chunk) => KEPT.has(chunk.type) || METADATA.has(chunk.type))) return undefined;
  const kept = list.filter((chunk) => KEPT.has(chunk.type));
  const reduced = kept.length === list.length ? png : Buffer.concat([SIGNATURE, ...kept.map((chunk) => chunk.bytes)]);
  const compressed = Buffer.concat(kept.filter((chunk) => chunk.type === 'IDAT').map((chunk) => chunk.data));
  return { png: reduced, width, height, compressed };
}

/**
 * True when the pixel data inflates to exactly `height` rows, each a valid filter byte and its
 * pixels. The rows are checked as they stream out and then dropped: only one chunk of them is
 * in memory at a time, and a zlib bomb hidden in the pixel data stops at the expected size.
 */
export async function isIntact({ width, height, compressed }: PlainPng): Promise<boolean> {
  const row = 1 + width * BYTES_PER_PIXEL;
  const expected = row * height;
  // Large chunks keep the work on the thread pool; the default 16 KiB would call back into JS fifty times an image.
  const inflater = createInflate({ chunkSize: Math.min(expected, 256 * 1024) });
  let seen = 0;
  let valid = true;
  inflater.on('data', (chunk: Buffer) => {
    for (let at = Math.ceil(seen / row) * row; at < seen + chunk.length; at += row) if (chunk[at - seen]! > 4) valid = false;
    seen += chunk.length;
    if (!valid || seen > expected) inflater.destroy();
  });
  inflater.end(compressed);
  try {
    await finished(inflater);
  } catch {
    return false; // truncated or corrupt (zlib checksum), or stopped above
  }
  return valid && seen === expected;
}
