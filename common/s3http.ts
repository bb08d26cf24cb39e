// The object requests a job makes on every run (put, get, delete), signed with SigV4 by aws4 and
// sent over a keep-alive undici pool. The AWS SDK's middleware stack costs three to five times
// this CPU a request (bench/NOTES.md, "A lean path for object requests"); it stays for the rare
// bucket-level calls.
import { crc32 } from 'node:zlib';
import aws4 from 'aws4';
import pRetry from 'p-retry';
import { Pool, type Dispatcher } from 'undici';
import type { StorageConfig } from './config.js';

/** An S3 error answer: its code as the name, the HTTP status where the SDK's errors keep it. */
export class S3Error extends Error {
  readonly $metadata: { httpStatusCode: number };

  constructor(status: number, code: string, message: string) {
    super(`${code}: ${message}`);
    this.name = code;
    this.$metadata = { httpStatusCode: status };
  }
}

export interface S3Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
}

interface S3Request {
  body?: Uint8Array | string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Error statuses the caller handles itself (answered, not thrown): 404 for a get, 412 for a conditional put. */
  expected?: readonly number[];
}

// The connections kept to the store: more requests than this wait for one.
const CONNECTIONS = 64;
// One more try after a network error or a 5xx, as the SDK's client was set up to make.
const RETRIES = 1;

const header = (headers: S3Answer['headers'], name: string) => {
  const value = headers[name];
  return Array.isArray(value) ? value[0] : value;
};

const xmlField = (xml: string, field: string) => new RegExp(`<${field}>([^<]*)</${field}>`).exec(xml)?.[1];

/**
 * A body's integrity headers: its CRC32 for the store to check (a body changed or cut on the way
 * is refused with XAmzContentChecksumMismatch), and the payload left out of the signature. CRC32
 * costs a third of SHA-256 over an image (`npx tsx bench/checksum.ts`: 104-107 against 328-341 us
 * of CPU for 600 KiB).
 */
export function integrityHeaders(body: string | Buffer | undefined): Record<string, string> {
  if (body === undefined) return {};
  const checksum = Buffer.alloc(4);
  checksum.writeUInt32BE(crc32(body) >>> 0);
  return { 'X-Amz-Content-Sha256': 'UNSIGNED-PAYLOAD', 'x-amz-checksum-crc32': checksum.toString('base64') };
}

export class SignedS3 {
  private readonly pool: Pool;
  private readonly host: string;
  private readonly credentials: { accessKeyId: string; secretAccessKey: string };

  constructor(private readonly config: StorageConfig) {
    const url = new URL(config.S3_ENDPOINT);
    this.host = url.host;
    this.pool = new Pool(url.origin, { connections: CONNECTIONS });
    this.credentials = { accessKeyId: config.S3_ACCESS_KEY, secretAccessKey: config.S3_SECRET_KEY };
  }

  /** Sends one object request; an error status not in `expected` throws an S3Error (its body read and the connection freed). */
  request(method: 'GET' | 'PUT' | 'DELETE', bucket: string, key: string, options: S3Request = {}): Promise<S3Answer> {
    const path = `/${bucket}/${key.split('/').map(encodeURIComponent).join('/')}`;
    const { body } = options;
    const payload = body === undefined || typeof body === 'string' || Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    const attempt = async (): Promise<S3Answer> => {
      // Signed per attempt: the signature carries its time.
      const signed = aws4.sign(
        { host: this.host, path, method, service: 's3', region: this.config.S3_REGION, body: payload, headers: { ...options.headers, ...integrityHeaders(payload) } },
        this.credentials,
      );
      const answer = await this.pool.request({
        path,
        method,
        headers: signed.headers as Record<string, string>,
        body: payload,
        signal: options.signal,
      });
      const { statusCode: status, headers, body } = answer;
      if (status < 300 || options.expected?.includes(status)) return { status, headers, body };
      const xml = await body.text().catch(() => '');
      const code = xmlField(xml, 'Code') ?? `Http${status}`;
      throw new S3Error(status, code, xmlField(xml, 'Message') ?? `${method} ${path} answered ${status}`);
    };
    return pRetry(attempt, {
      retries: RETRIES,
      minTimeout: 100,
      signal: options.signal,
      shouldRetry: ({ error }) => !(error instanceof S3Error) || error.$metadata.httpStatusCode >= 500,
    });
  }

  /** The ETag header of an answer (quoted, as S3 sends it). */
  static etag(answer: S3Answer): string | undefined {
    return header(answer.headers, 'etag');
  }

  static contentLength(answer: S3Answer): number | undefined {
    const length = header(answer.headers, 'content-length');
    return length === undefined ? undefined : Number(length);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}
