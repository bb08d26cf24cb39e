// The API's errors: a small typed set, turned into HTTP in one place (toErrorResponse).
// Every answer that is not a success has the body {error: {code, message, field?, request_id?}}.
import { HTTPException } from 'hono/http-exception';
import type { Logger } from '../common/logger.js';
import { currentRequestId } from './requestid.js';

interface Options {
  /** A more specific machine-readable code than the class default. */
  code?: string;
  /** The request field at fault: a query/form field, `image`, or a header name. */
  field?: string;
  /** Seconds after which a retry may succeed (sent as Retry-After). */
  retryAfter?: number;
  /** The underlying failure: logged, never sent to the client. */
  cause?: unknown;
  /** Close the connection after answering, so an unread request body is not drained. */
  closeConnection?: boolean;
}

export abstract class ApiError extends Error {
  abstract readonly status: 400 | 401 | 403 | 404 | 405 | 409 | 410 | 413 | 415 | 422 | 429 | 503;
  readonly code: string;
  readonly field: string | undefined;
  readonly retryAfter: number | undefined;
  readonly closeConnection: boolean;

  constructor(message: string, defaultCode: string, options: Options = {}) {
    super(message, { cause: options.cause });
    this.code = options.code ?? defaultCode;
    this.field = options.field;
    this.retryAfter = options.retryAfter;
    this.closeConnection = options.closeConnection ?? false;
  }
}

export class ValidationError extends ApiError {
  override name = 'ValidationError';
  readonly status = 400;
  constructor(field: string, message: string, options: Omit<Options, 'field'> = {}) {
    super(message, 'validation_error', { ...options, field });
  }
}

/** A valid field that the chosen model does not take, or outside the model's own range. */
export class ModelParamError extends ApiError {
  override name = 'ModelParamError';
  readonly status = 422;
  constructor(field: string, message: string) {
    super(message, 'invalid_for_model', { field });
  }
}

/** No valid API key. Never says whether the key was missing, malformed, unknown, revoked or wrong. */
export class Unauthorized extends ApiError {
  override name = 'Unauthorized';
  readonly status = 401;
  constructor() {
    super('a valid API key is required: send Authorization: Bearer <key>', 'unauthorized', { field: 'Authorization' });
  }
}

/** Over a limit: the code names it, Retry-After says when to come back. */
export class TooManyRequests extends ApiError {
  override name = 'TooManyRequests';
  readonly status = 429;
  /** RateLimit-* fields of the limit that refused. */
  readonly headers: Record<string, string>;
  constructor(message: string, options: Options & { code: string; retryAfter: number; headers?: Record<string, string> }) {
    super(message, 'rate_limited', options);
    this.headers = options.headers ?? {};
  }
}

export class NotFound extends ApiError {
  override name = 'NotFound';
  readonly status = 404;
  constructor(message: string, options?: Options) {
    super(message, 'not_found', options);
  }
}

/** A known path, another method: answered with the methods it does take (RFC 9110 asks for Allow). */
export class MethodNotAllowed extends ApiError {
  override name = 'MethodNotAllowed';
  readonly status = 405;
  constructor(
    message: string,
    readonly allow: string[],
  ) {
    super(message, 'method_not_allowed');
  }
}

export class Conflict extends ApiError {
  override name = 'Conflict';
  readonly status = 409;
  constructor(message: string, options?: Options) {
    super(message, 'conflict', options);
  }
}

/** A valid caller asks for what its key does not allow. */
export class Forbidden extends ApiError {
  override name = 'Forbidden';
  readonly status = 403;
  constructor(message: string, options: Options = {}) {
    super(message, 'forbidden', options);
  }
}

/** A dependency (Kafka, object storage) did not answer in time or failed; the client may retry. */
export class Unavailable extends ApiError {
  override name = 'Unavailable';
  readonly status = 503;
  constructor(message: string, options: Options = {}) {
    super(message, 'unavailable', { retryAfter: 2, ...options });
  }
}

/** The model's source cannot be served (the consumer's check at start): no retry helps until it is fixed. */
export class ModelUnavailable extends ApiError {
  override name = 'ModelUnavailable';
  readonly status = 503;
  constructor(model: string, reason: string) {
    super(`model_name: model ${model} is unavailable: ${reason}`, 'model_unavailable', { field: 'model_name' });
  }
}

/** It existed and is gone for good (a job past its retention). */
export class Gone extends ApiError {
  override name = 'Gone';
  readonly status = 410;
  constructor(message: string, options?: Options) {
    super(message, 'gone', options);
  }
}

export class PayloadTooLarge extends ApiError {
  override name = 'PayloadTooLarge';
  readonly status = 413;
  constructor(message: string, options?: Options) {
    super(message, 'payload_too_large', options);
  }
}

export class UnsupportedMedia extends ApiError {
  override name = 'UnsupportedMedia';
  readonly status = 415;
  constructor(message: string, options?: Options) {
    super(message, 'unsupported_media_type', options);
  }
}

export class Unprocessable extends ApiError {
  override name = 'Unprocessable';
  readonly status = 422;
  constructor(message: string, options?: Options) {
    super(message, 'unprocessable', options);
  }
}

/** Header names are matched in lower case; errors name them as clients write them. */
const HEADER_NAMES: Record<string, string> = {
  'idempotency-key': 'Idempotency-Key',
  'last-event-id': 'Last-Event-ID',
  'if-none-match': 'If-None-Match',
  'cancel-after': 'Cancel-After',
};

/** A zod failure on any part of a request, as a ValidationError naming the first field at fault. */
export function fromZod(error: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> }, target: string): ValidationError {
  const issue = error.issues[0];
  const name = String(issue?.path[0] ?? target);
  const field = target === 'header' ? (HEADER_NAMES[name] ?? name) : name;
  return new ValidationError(field, `${field}: ${issue?.message ?? 'invalid'}`);
}

export interface ErrorBody {
  error: { code: string; message: string; field?: string; request_id?: string };
}

/** An error's body; request_id (api/requestid.ts) finds the request's lines in the API's logs. */
function errorBody(code: string, message: string, field?: string): ErrorBody {
  const requestId = currentRequestId();
  return { error: { code, message, ...(field ? { field } : {}), ...(requestId ? { request_id: requestId } : {}) } };
}

const HTTP_CODES: Record<number, string> = {
  400: 'bad_request',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
};

/** A typed error as its HTTP answer. */
export function errorResponse(error: ApiError): Response {
  const { code, message, field, status, retryAfter } = error;
  const headers: Record<string, string> = {};
  if (retryAfter !== undefined) headers['Retry-After'] = String(retryAfter);
  if (error.closeConnection) headers.Connection = 'close';
  if (error instanceof MethodNotAllowed) headers.Allow = error.allow.join(', ');
  if (error instanceof Unauthorized) headers['WWW-Authenticate'] = 'Bearer realm="img2img"';
  if (error instanceof TooManyRequests) Object.assign(headers, error.headers);
  return Response.json(errorBody(code, message, field), { status, headers });
}

/** The one mapping from anything thrown to an HTTP answer; unknown errors are logged, never shown. */
export function toErrorResponse(error: unknown, log: Logger): Response {
  if (error instanceof ApiError) {
    if (error.status >= 500) log.warn({ err: error.cause ?? error, code: error.code }, error.message);
    return errorResponse(error);
  }
  if (error instanceof HTTPException && error.status < 500) {
    const code = HTTP_CODES[error.status] ?? 'bad_request';
    // The only request body the API reads is the multipart upload, so that is what a 415 is about.
    const message = error.status === 415 ? 'the request body must be multipart/form-data' : error.message || code;
    return Response.json(errorBody(code, message), { status: error.status });
  }
  log.error({ err: error }, 'unhandled error');
  return Response.json(errorBody('internal_error', 'internal error'), { status: 500 });
}
