// The multipart upload of POST /api/diffusion, read in one streaming pass (busboy) straight
// from the socket: text fields as strings, the `image` file into one buffer. Compared with
// the generic form parser (whole body into memory, parsed, copied into a File, copied out
// again) it keeps one copy of the image and half the CPU, and it enforces the body limit as
// it goes: a declared Content-Length over the limit is refused before a byte is read, and a
// chunked body is cut off as soon as it passes the limit. Memory is taken as bytes arrive,
// from a budget shared by every upload of the process.
import type { IncomingMessage } from 'node:http';
import { Busboy, type BusboyFileStream } from '@fastify/busboy';
import { PayloadTooLarge, Unavailable, UnsupportedMedia, ValidationError } from './errors.js';

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

/**
 * The bytes that uploads of this process may hold at once. An upload takes its bytes from here
 * as they arrive (never a declared Content-Length before they do); past the budget it is
 * refused with 503, so memory stays bounded however many clients upload at once.
 */
export class UploadBudget {
  private used = 0;

  constructor(readonly capacity: number) {}

  get inUse(): number {
    return this.used;
  }

  take(bytes: number): boolean {
    if (this.used + bytes > this.capacity) return false;
    this.used += bytes;
    return true;
  }

  give(bytes: number): void {
    this.used -= bytes;
  }
}

const busy = () =>
  new Unavailable('too many uploads in progress; retry shortly', { code: 'uploads_busy', retryAfter: 1, closeConnection: true });

/** Reads the multipart body; what its image buffer took from `budget` is given back once `done` fires (the response is over). */
export function readUpload(incoming: IncomingMessage, maxBytes: number, budget: UploadBudget, done: Promise<void>): Promise<Upload> {
  const type = incoming.headers['content-type'] ?? '';
  if (!/^multipart\/form-data\s*;/i.test(type)) {
    return Promise.reject(new UnsupportedMedia('the request body must be multipart/form-data with the image in the field "image"'));
  }
  const declared = Number(incoming.headers['content-length'] ?? 0);
  if (declared > maxBytes) return Promise.reject(tooLarge(maxBytes, declared));
  const image = new Collector(budget);
  void done.finally(() => image.release());
  return new Promise<Upload>((resolve, reject) => parse(incoming, type, maxBytes, image, resolve, reject));
}

function parse(incoming: IncomingMessage, type: string, maxBytes: number, image: Collector, resolve: (upload: Upload) => void, reject: (error: unknown) => void) {
  const fields: Record<string, string | string[]> = Object.create(null);
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
    stream.on('data', (chunk: Buffer) => {
      if (!image.add(chunk)) fail(busy());
    });
  });
  parser.on('error', malformed);
  // Past a limit busboy drops the rest silently: say so, rather than "image required".
  const tooMany = (what: string, limit: number) => () =>
    fail(new ValidationError('body', `the multipart body has more than ${limit} ${what}`, { code: 'too_many_parts', closeConnection: true }));
  parser.on('partsLimit', tooMany('parts', FIELD_COUNT + 4));
  parser.on('fieldsLimit', tooMany('text fields', FIELD_COUNT));
  parser.on('filesLimit', tooMany('files', 4));
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
 * Gathers the file's chunks as they arrive, each counted against the budget, and joins them
 * once at the end: memory follows what a client sent, never what it declared, and each byte is
 * copied once.
 */
class Collector {
  private readonly chunks: Buffer[] = [];
  private length = 0;
  private taken = 0;

  constructor(private readonly budget: UploadBudget) {}

  /** false when the budget cannot hold the chunk: the upload must be refused. */
  add(chunk: Buffer): boolean {
    if (!this.budget.take(chunk.length)) return false;
    this.taken += chunk.length;
    this.chunks.push(chunk);
    this.length += chunk.length;
    return true;
  }

  /** The file, joined; the chunks are let go at once (not when the response ends), so a request holds one copy. */
  bytes(): Buffer {
    if (this.chunks.length > 1) this.chunks.splice(0, this.chunks.length, Buffer.concat(this.chunks, this.length));
    return this.chunks[0] ?? Buffer.alloc(0);
  }

  release(): void {
    this.budget.give(this.taken);
    this.taken = 0;
  }
}
