// The multipart upload of POST /api/diffusion, read in one streaming pass (busboy) straight
// from the socket: text fields as strings, the `image` file into one buffer. Compared with
// the generic form parser (whole body into memory, parsed, copied into a File, copied out
// again) it keeps one copy of the image and half the CPU, and it enforces the body limit as
// it goes: a declared Content-Length over the limit is refused before a byte is read, and a
// chunked body is cut off as soon as it passes the limit.
import type { IncomingMessage } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import { Busboy, type BusboyFileStream } from '@fastify/busboy';
import { HTTPException } from 'hono/http-exception';
import { PayloadTooLarge, UnsupportedMedia, ValidationError } from './errors.js';

/** The Hono environment under @hono/node-server: the Node request is at c.env.incoming. */
export type NodeEnv = { Bindings: HttpBindings };

export interface Upload {
  /** Text fields; a field sent twice becomes an array (and fails validation). */
  fields: Record<string, string | string[]>;
  image: Buffer | undefined;
}

const FIELD_LIMIT = 64 * 1024;
const FIELD_COUNT = 32;

const tooLarge = (maxBytes: number) =>
  new PayloadTooLarge(`the request body exceeds ${maxBytes} bytes (${(maxBytes / 1024 / 1024).toFixed(1)} MiB)`, {
    code: 'body_too_large',
    closeConnection: true, // the rest of the body is never read
  });

export function readUpload(incoming: IncomingMessage, maxBytes: number): Promise<Upload> {
  const type = incoming.headers['content-type'] ?? '';
  if (!/^multipart\/form-data\s*;/i.test(type)) {
    return Promise.reject(new UnsupportedMedia('the request body must be multipart/form-data with the image in the field "image"'));
  }
  if (Number(incoming.headers['content-length'] ?? 0) > maxBytes) return Promise.reject(tooLarge(maxBytes));
  return new Promise<Upload>((resolve, reject) => parse(incoming, type, maxBytes, resolve, reject));
}

function parse(incoming: IncomingMessage, type: string, maxBytes: number, resolve: (upload: Upload) => void, reject: (error: unknown) => void) {
  const fields: Record<string, string | string[]> = Object.create(null);
  const parts: Buffer[] = [];
  let sawImage = false;
  let received = 0;
  let settled = false;

  const parser = Busboy({
    headers: { ...incoming.headers, 'content-type': type },
    limits: { fields: FIELD_COUNT, fieldSize: FIELD_LIMIT, files: 4, fileSize: maxBytes, parts: FIELD_COUNT + 4 },
  });
  const fail = (error: unknown) => {
    if (settled) return;
    settled = true;
    incoming.unpipe(parser);
    incoming.off('data', count);
    incoming.pause(); // read no further: the answer closes the connection
    reject(error);
  };
  const count = (chunk: Buffer) => {
    received += chunk.length;
    if (received > maxBytes) fail(tooLarge(maxBytes));
  };

  parser.on('field', (name, value, _nameTruncated, valueTruncated) => {
    if (valueTruncated) return fail(new ValidationError(name, `${name}: must be at most ${FIELD_LIMIT} bytes`));
    const earlier = fields[name];
    fields[name] = earlier === undefined ? value : [earlier, value].flat();
  });
  parser.on('file', (name, stream: BusboyFileStream) => {
    if (name !== 'image') return void stream.resume(); // other files are not ours: drain them
    if (sawImage) return fail(new ValidationError('image', 'image: send exactly one file'));
    sawImage = true;
    stream.on('data', (chunk: Buffer) => parts.push(chunk));
  });
  parser.on('error', (error) => fail(new HTTPException(400, { message: `malformed multipart body: ${(error as Error).message}` })));
  parser.on('finish', () => {
    if (settled) return;
    settled = true;
    resolve({ fields, image: sawImage ? Buffer.concat(parts) : undefined });
  });
  incoming.on('data', count);
  incoming.on('aborted', () => fail(new HTTPException(400, { message: 'the client aborted the upload' })));
  incoming.pipe(parser);
}
