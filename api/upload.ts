// The multipart upload of POST /api/diffusion, read in one streaming pass (busboy) straight
// from the socket: text fields as strings, the `image` file into one buffer. Compared with
// the generic form parser (whole body into memory, parsed, copied into a File, copied out
// again) it keeps one copy of the image and half the CPU, and it enforces the body limit as
// it goes: a declared Content-Length over the limit is refused before a byte is read, and a
// chunked body is cut off as soon as it passes the limit.
import type { IncomingMessage } from 'node:http';
import { Busboy, type BusboyFileStream } from '@fastify/busboy';
import { PayloadTooLarge, UnsupportedMedia, ValidationError } from './errors.js';

export interface Upload {
  /** Text fields; a field sent twice becomes an array (and fails validation). */
  fields: Record<string, string | string[]>;
  image: Buffer | undefined;
}

const FIELD_LIMIT = 64 * 1024;
const FIELD_COUNT = 32;

/**
 * A body declared at most twice the limit is left for Node to drain after the answer (it
 * discards what is unread on a kept-alive connection): a client or proxy still sending it
 * then reads the 413 instead of a reset. A larger or undeclared one closes the connection:
 * the rest of it is never read.
 */
const tooLarge = (maxBytes: number, declaredBytes?: number) =>
  new PayloadTooLarge(`the request body exceeds ${maxBytes} bytes (${(maxBytes / 1024 / 1024).toFixed(1)} MiB)`, {
    code: 'body_too_large',
    closeConnection: !(declaredBytes !== undefined && declaredBytes <= 2 * maxBytes),
  });

export function readUpload(incoming: IncomingMessage, maxBytes: number): Promise<Upload> {
  const type = incoming.headers['content-type'] ?? '';
  if (!/^multipart\/form-data\s*;/i.test(type)) {
    return Promise.reject(new UnsupportedMedia('the request body must be multipart/form-data with the image in the field "image"'));
  }
  const declared = Number(incoming.headers['content-length'] ?? 0);
  if (declared > maxBytes) return Promise.reject(tooLarge(maxBytes, declared));
  return new Promise<Upload>((resolve, reject) => parse(incoming, type, maxBytes, resolve, reject));
}

function parse(incoming: IncomingMessage, type: string, maxBytes: number, resolve: (upload: Upload) => void, reject: (error: unknown) => void) {
  const fields: Record<string, string | string[]> = Object.create(null);
  const image = new Collector(Number(incoming.headers['content-length'] ?? 0));
  let sawImage = false;
  let received = 0;
  let settled = false;

  const parser = Busboy({
    headers: { ...incoming.headers, 'content-type': type },
    limits: { fields: FIELD_COUNT, fieldSize: FIELD_LIMIT, files: 4, fileSize: maxBytes, parts: FIELD_COUNT + 4 },
  });
  // Every error here answers with Connection: close: what is left of the body is never read,
  // and no later request on the connection can be parsed out of it.
  const fail = (error: unknown) => {
    if (settled) return;
    settled = true;
    incoming.unpipe(parser);
    incoming.off('data', count);
    incoming.pause();
    reject(error);
  };
  const invalid = (field: string, message: string, code?: string) =>
    fail(new ValidationError(field, message, { code, closeConnection: true }));
  const count = (chunk: Buffer) => {
    received += chunk.length;
    if (received > maxBytes) fail(tooLarge(maxBytes));
  };

  parser.on('field', (name, value, _nameTruncated, valueTruncated) => {
    if (valueTruncated) return invalid(name, `${name}: must be at most ${FIELD_LIMIT} bytes`);
    const earlier = fields[name];
    fields[name] = earlier === undefined ? value : [earlier, value].flat();
  });
  const malformed = (error: unknown) => invalid('body', `the multipart body is malformed: ${(error as Error).message}`, 'bad_request');
  parser.on('file', (name, stream: BusboyFileStream) => {
    stream.on('error', malformed); // a part cut short errors on its own stream
    if (name !== 'image') return void stream.resume(); // other files are not ours: drain them
    if (sawImage) return invalid('image', 'image: send exactly one file');
    sawImage = true;
    stream.on('data', (chunk: Buffer) => image.add(chunk));
  });
  parser.on('error', malformed);
  parser.on('finish', () => {
    if (settled) return;
    settled = true;
    resolve({ fields, image: sawImage ? image.bytes() : undefined });
  });
  incoming.on('data', count);
  incoming.on('aborted', () => invalid('body', 'the client aborted the upload', 'bad_request'));
  incoming.pipe(parser);
}

/**
 * Gathers the file's chunks. With a Content-Length (browsers and most clients send one) it
 * copies them into one buffer of that size as they arrive, so the image never exists twice.
 */
class Collector {
  private readonly target: Buffer | undefined;
  private readonly chunks: Buffer[] = [];
  private length = 0;

  constructor(declaredBytes: number) {
    this.target = declaredBytes > 0 ? Buffer.allocUnsafe(declaredBytes) : undefined;
  }

  add(chunk: Buffer): void {
    if (this.target) chunk.copy(this.target, this.length);
    else this.chunks.push(chunk);
    this.length += chunk.length;
  }

  bytes(): Buffer {
    return this.target ? this.target.subarray(0, this.length) : Buffer.concat(this.chunks, this.length);
  }
}
