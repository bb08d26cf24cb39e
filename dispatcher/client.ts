// The HTTP client that delivers webhooks, safe against server-side request forgery: http(s)
// only; the address in the URL, or every address its name resolves to, must pass
// common/addresses.ts, checked inside the connection's own lookup so the address checked is the
// address connected to (DNS rebinding cannot slip in between); no redirect is followed; the
// whole exchange has a 10 s deadline and at most 64 KiB of the answer is read.
import { lookup as dnsLookup } from 'node:dns/promises';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { addressProblem, urlProblem } from '../common/addresses.js';

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Every address of a name (A and AAAA); tests pass a stub. */
export type Resolver = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemResolver: Resolver = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

/** A delivery that cannot be sent; `retryable` says whether trying again later may help. */
export class DeliveryError extends Error {
  override name = 'DeliveryError';
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** The target's address is not allowed: never retried, and no connection was made. */
export class BlockedTarget extends DeliveryError {
  override name = 'BlockedTarget';
  constructor(message: string) {
    super(message, false);
  }
}

/**
 * A `lookup` for net.connect: resolves every address of the name and refuses the connection
 * when any of them may not be reached (a name with one public and one private address could
 * otherwise be steered to the private one).
 */
export function guardedLookup(resolve: Resolver, allowPrivate: boolean): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname).then(
      (found) => {
        const addresses = options.family === 4 || options.family === 6 ? found.filter((a) => a.family === options.family) : found;
        const problem = addresses.length ? addresses.map((a) => addressProblem(a.address, allowPrivate)).find(Boolean) : 'it has no address';
        if (problem) return callback(new BlockedTarget(`${hostname}: ${problem}`), '', 0);
        if (options.all) return callback(null, addresses);
        callback(null, addresses[0]!.address, addresses[0]!.family);
      },
      (error: NodeJS.ErrnoException) => callback(error, '', 0),
    );
  };
}

export interface ClientOptions {
  allowPrivate: boolean;
  resolve?: Resolver;
  timeoutMs?: number;
  maxResponseBytes?: number;
}

export interface Answer {
  status: number;
  /** Seconds the receiver asked us to wait (Retry-After), if it did. */
  retryAfterS: number | undefined;
}

export class WebhookClient {
  private readonly lookup: LookupFunction;
  private readonly timeoutMs: number;
  private readonly maxResponseBytes: number;

  constructor(private readonly options: ClientOptions) {
    this.lookup = guardedLookup(options.resolve ?? systemResolver, options.allowPrivate);
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxResponseBytes = options.maxResponseBytes ?? 64 * 1024;
  }

  /** POSTs `body`; resolves with the receiver's status (3xx included: redirects are not followed). */
  async post(url: string, body: string, headers: Record<string, string>): Promise<Answer> {
    const problem = urlProblem(url, this.options.allowPrivate);
    if (problem) throw new BlockedTarget(problem);
    const target = new URL(url);
    const transport = target.protocol === 'https:' ? https : http;
    const signal = AbortSignal.timeout(this.timeoutMs);
    const request = transport.request(target, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'user-agent': 'img2img-webhooks/1' },
      lookup: this.lookup,
      agent: false, // a fresh connection each time: every one goes through the lookup above
      signal,
    });
    try {
      const response = await new Promise<IncomingMessage>((resolve, reject) => {
        request.once('response', resolve);
        request.once('error', reject);
        request.end(body);
      });
      await this.drain(response);
      return { status: response.statusCode ?? 0, retryAfterS: retryAfter(response.headers['retry-after']) };
    } catch (error) {
      if (error instanceof DeliveryError) throw error;
      const cause = (error as NodeJS.ErrnoException).cause;
      if (cause instanceof DeliveryError) throw cause;
      throw new DeliveryError(signal.aborted ? `no answer within ${this.timeoutMs} ms` : describe(error), true);
    } finally {
      request.destroy();
    }
  }

  /** Reads at most maxResponseBytes of the answer (nobody needs more), then lets the connection go. */
  private async drain(response: IncomingMessage): Promise<void> {
    let read = 0;
    for await (const chunk of response) {
      read += (chunk as Buffer).length;
      if (read >= this.maxResponseBytes) break; // leaving the loop destroys the response
    }
  }
}

function describe(error: unknown): string {
  const { code, message } = error as NodeJS.ErrnoException;
  return code ? `${code}: ${message}` : String(message ?? error);
}

/** Retry-After as seconds or an HTTP date; undefined when absent or unreadable. */
function retryAfter(value: string | undefined): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - Date.now()) / 1000);
}
