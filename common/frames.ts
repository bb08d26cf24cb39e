// The runner protocol's framing, mirrored by diffusion-py/img2img_runner/frames.py:
// u32 BE header length, UTF-8 JSON header, u32 BE payload length, payload bytes.
export const MAX_HEADER_BYTES = 1024 * 1024;
export const MAX_PAYLOAD_BYTES = 256 * 1024 * 1024;

export interface Frame {
  header: Record<string, unknown>;
  payload: Buffer;
}

export function encodeFrame(header: Record<string, unknown>, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const out = Buffer.allocUnsafe(8 + json.length + payload.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  out.writeUInt32BE(payload.length, 4 + json.length);
  out.set(payload, 8 + json.length);
  return out;
}

/** Turns a byte stream's chunks into frames; keeps only the unfinished tail buffered. */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Frame[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const frames: Frame[] = [];
    for (;;) {
      const frame = this.next();
      if (!frame) return frames;
      frames.push(frame);
    }
  }

  /** Bytes of a frame begun but not finished (non-zero at end of stream means truncation). */
  get buffered(): number {
    return this.pending.length;
  }

  private next(): Frame | undefined {
    const buf = this.pending;
    if (buf.length < 4) return undefined;
    const headerLength = buf.readUInt32BE(0);
    if (headerLength > MAX_HEADER_BYTES) throw new Error(`frame header of ${headerLength} bytes exceeds ${MAX_HEADER_BYTES}`);
    if (buf.length < 8 + headerLength) return undefined;
    const payloadLength = buf.readUInt32BE(4 + headerLength);
    if (payloadLength > MAX_PAYLOAD_BYTES) throw new Error(`frame payload of ${payloadLength} bytes exceeds ${MAX_PAYLOAD_BYTES}`);
    const end = 8 + headerLength + payloadLength;
    if (buf.length < end) return undefined;
    const header = JSON.parse(buf.subarray(4, 4 + headerLength).toString('utf8')) as Record<string, unknown>;
    const payload = Buffer.from(buf.subarray(8 + headerLength, end));
    this.pending = buf.subarray(end);
    return { header, payload };
  }
}
