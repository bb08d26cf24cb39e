// Whether two outputs of the same job agree. Different GPUs (and kernels) do not give
// bitwise-equal images for the same seed, so decoded pixels are compared by PSNR: two honest
// runs differ by rounding (well above 40 dB); a wrong model, seed or a tampered image does not.
import sharp from 'sharp';

async function pixels(png: Uint8Array): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(png).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

/** PSNR in dB of b against a over 8-bit RGB; Infinity when equal, -Infinity when sizes differ or a PNG is unreadable. */
export async function psnr(a: Uint8Array, b: Uint8Array): Promise<number> {
  let left, right;
  try {
    [left, right] = await Promise.all([pixels(a), pixels(b)]);
  } catch {
    return -Infinity;
  }
  if (left.width !== right.width || left.height !== right.height || left.data.length !== right.data.length) return -Infinity;
  let sum = 0;
  for (let i = 0; i < left.data.length; i++) {
    const d = left.data[i]! - right.data[i]!;
    sum += d * d;
  }
  const mse = sum / left.data.length;
  return mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse);
}
