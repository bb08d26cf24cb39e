// The HTTP edges of the API on a real server: links that a Host header cannot poison,
// Expect: 100-continue, 405 with Allow, a malformed Host, slow clients, and the headers of a
// service on the open network (nosniff, CSP, Referrer-Policy, CORS off unless configured).
import { readFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, pngImage, startTestApi, type TestApi } from '../helpers/api.js';

let api: TestApi;
/** Configured otherwise: short timeouts, CORS for one origin, one allowed Host. */
let tuned: TestApi;
beforeAll(async () => {
  api = await startTestApi();
  tuned = await startTestApi({
    HTTP_HEADERS_TIMEOUT_MS: '1000',
    HTTP_REQUEST_TIMEOUT_MS: '1000',
    CORS_ORIGINS: 'https://app.example',
    ALLOWED_HOSTS: 'img2img.test:8000',
  });
});
afterAll(async () => {
  await api?.close();
  await tuned?.close();
});

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** Whether the server sent 100 Continue first. */
  continued: boolean;
}

/** A request through node:http, which (unlike fetch) lets a test set Host and Expect. */
function send(url: string, path: string, options: { method?: string; headers?: Record<string, string>; body?: Buffer } = {}) {
  return new Promise<Answer>((resolve, reject) => {
    let continued = false;
    const req = request(new URL(path, url), { method: options.method ?? 'GET', headers: options.headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body, continued }));
    });
    req.on('error', reject);
    req.on('continue', () => {
      continued = true;
      req.end(options.body);
    });
    // With Expect: 100-continue the body waits for the invitation; without it, it goes now.
    if (!options.headers?.expect) req.end(options.body);
  });
}

/** The multipart body of a small job. */
async function jobBody() {
  const boundary = 'b0undary';
  const png = await pngImage(64, 64);
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n`),
    png,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  return { body, type: `multipart/form-data; boundary=${boundary}` };
}

const JOB_PATH = '/api/diffusion?model_name=tiny&prompt=a+lighthouse';

describe('links', () => {
  it('never name the Host a client sends: they name the address the API listens on', async () => {
    const { body, type } = await jobBody();
    const answer = await send(api.url, JOB_PATH, { method: 'POST', headers: { host: 'evil.example', 'content-type': type }, body });
    expect(answer.status).toBe(202);
    const accepted = JSON.parse(answer.body);
    for (const link of [accepted.status_url, accepted.result_url, accepted.events_url, answer.headers.location]) {
      expect(link.startsWith(`${api.url}/api/`), link).toBe(true);
    }
    const view = await send(api.url, `/api/jobs/${accepted.id}`, { headers: { host: 'evil.example:8000' } });
    expect(JSON.parse(view.body).result_url).toBe(`${api.url}/api/results/${accepted.id}`);
  });

  it('name a Host that ALLOWED_HOSTS lists', async () => {
    const { body, type } = await jobBody();
    const answer = await send(tuned.url, JOB_PATH, { method: 'POST', headers: { host: 'img2img.test:8000', 'content-type': type }, body });
    expect(JSON.parse(answer.body).status_url).toMatch(/^http:\/\/img2img\.test:8000\/api\/jobs\//);
  });
});

describe('Expect: 100-continue', () => {
  it('answers a declared 30 MB body with 413 without inviting it, and closes the connection', async () => {
    const headers = { expect: '100-continue', 'content-type': 'multipart/form-data; boundary=b', 'content-length': String(30_000_000) };
    const answer = await send(api.url, JOB_PATH, { method: 'POST', headers, body: Buffer.alloc(0) });
    expect({ status: answer.status, continued: answer.continued }).toEqual({ status: 413, continued: false });
    expect(JSON.parse(answer.body).error.code).toBe('body_too_large');
    expect(answer.headers.connection).toBe('close');
  });

  it('invites a body within the limit, which then gets its 202', async () => {
    const { body, type } = await jobBody();
    const headers = { expect: '100-continue', 'content-type': type, 'content-length': String(body.length) };
    const answer = await send(api.url, JOB_PATH, { method: 'POST', headers, body });
    expect({ status: answer.status, continued: answer.continued }).toEqual({ status: 202, continued: true });
  });
});

describe('methods', () => {
  it.each([
    ['PUT', '/api/models', 'GET, HEAD, OPTIONS'],
    ['DELETE', '/api/diffusion', 'POST, OPTIONS'],
    ['PATCH', '/api/jobs/AAAAAAAAAAAAAAAAAAAAAA', 'GET, DELETE, HEAD, OPTIONS'],
    ['POST', '/api/results/AAAAAAAAAAAAAAAAAAAAAA', 'GET, HEAD, OPTIONS'],
    ['HEAD', '/api/diffusion', 'POST, OPTIONS'],
  ])('answers %s %s with 405 and Allow: %s', async (method, path, allow) => {
    const response = await fetch(`${api.url}${path}`, { method });
    expect(response.status).toBe(405);
    expect(response.headers.get('allow')).toBe(allow);
    if (method !== 'HEAD') expect((await json(response)).error.code).toBe('method_not_allowed');
  });

  it('answers a trailing slash with 404 and the path it meant, not a 405 that allows the method it refused', async () => {
    for (const [method, path] of [['POST', '/api/diffusion/'], ['GET', '/api/models/']] as const) {
      const response = await fetch(`${api.url}${path}`, { method });
      expect(response.status, path).toBe(404);
      const { error } = await json(response);
      expect(error).toMatchObject({ code: 'route_not_found', message: expect.stringContaining(`did you mean ${path.slice(0, -1)}?`) });
    }
  });

  it('answers OPTIONS on a known path with 204 and Allow, and an unknown path with 404', async () => {
    const options = await fetch(`${api.url}/api/models`, { method: 'OPTIONS' });
    expect({ status: options.status, allow: options.headers.get('allow') }).toEqual({ status: 204, allow: 'GET, HEAD, OPTIONS' });
    const unknown = await fetch(`${api.url}/api/nope`, { method: 'PUT' });
    expect(unknown.status).toBe(404);
    expect((await json(unknown)).error.code).toBe('route_not_found');
  });
});

/** Writes raw bytes and reads until the server closes: what a client that breaks HTTP sees. */
function raw(url: string, text: string, keepOpen = false) {
  const { hostname, port } = new URL(url);
  return new Promise<string>((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => (keepOpen ? socket.write(text) : socket.end(text)));
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.on('close', () => resolve(received));
    socket.on('error', reject);
  });
}

describe('a malformed request', () => {
  it.each(['bad host', 'a/b', '[::1'])('with Host %j gets the JSON error shape, naming Host', async (host) => {
    const answer = await raw(api.url, `GET /healthz HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    const [head, body] = answer.split('\r\n\r\n');
    expect(head).toMatch(/^HTTP\/1\.1 400 /);
    expect(head).toMatch(/content-type: application\/json/i);
    expect(JSON.parse(body!)).toEqual({ error: { code: 'bad_request', message: expect.any(String), field: 'Host' } });
  });
});

describe('slow clients', () => {
  it('get 408 and a closed connection when the request does not arrive within HTTP_REQUEST_TIMEOUT_MS', async () => {
    // Headers, then 10 bytes of a declared 1000-byte body, then nothing: the server ends it.
    const head = `POST ${JOB_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000\r\n\r\n`;
    const answer = await raw(tuned.url, `${head}0123456789`, true);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('get 408 when the headers do not arrive within HTTP_HEADERS_TIMEOUT_MS', async () => {
    const answer = await raw(tuned.url, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', true);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });
});

describe('headers', () => {
  it('on every answer: nosniff, a CSP that forbids framing, no referrer, no CORS', async () => {
    for (const path of ['/healthz', '/api/models', '/openapi.json', '/api/jobs/nope', '/nope']) {
      const response = await fetch(`${api.url}${path}`, { headers: { Origin: 'https://app.example' } });
      expect(response.headers.get('x-content-type-options'), path).toBe('nosniff');
      expect(response.headers.get('content-security-policy'), path).toBe("default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'");
      expect(response.headers.get('referrer-policy'), path).toBe('no-referrer');
      expect(response.headers.get('x-frame-options'), path).toBe('DENY');
      expect(response.headers.get('access-control-allow-origin'), path).toBeNull();
    }
  });

  const policyOf = (response: Response) =>
    Object.fromEntries(
      response.headers
        .get('content-security-policy')!
        .split('; ')
        .map((directive) => {
          const [name, ...sources] = directive.split(' ');
          return [name!, sources];
        }),
    );

  it('on the two pages, / and /docs: every script, stylesheet and request from this origin only, no inline script, no framing', async () => {
    for (const path of ['/', '/docs']) {
      const response = await fetch(`${api.url}${path}`);
      const html = await response.text();
      const policy = policyOf(response);
      expect(policy['frame-ancestors'], path).toEqual(["'none'"]);
      expect(policy['script-src'], path).toEqual(["'self'"]);
      expect(policy['connect-src'], path).toEqual(["'self'"]); // the document, the API and "Try it out"
      for (const sources of Object.values(policy)) for (const source of sources) expect(source, path).not.toMatch(/^https?:|\*/);
      expect(html, path).not.toMatch(/<script>|<script [^>]*>[^<]/); // no inline script
      const files = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map(([, url]) => url!);
      expect(files.length, path).toBeGreaterThan(1);
      for (const file of files) {
        expect(file, path).toMatch(/^\/[^/]/); // a path on this origin, never another host
        expect((await fetch(`${api.url}${file}`)).status, file).toBe(200);
      }
    }
  });

  it('Swagger UI\'s files: from swagger-ui-dist at a versioned path, cached for a year; the page\'s own files revalidated by ETag', async () => {
    const html = await (await fetch(`${api.url}/docs`)).text();
    const vendor = [...html.matchAll(/(?:src|href)="(\/vendor\/swagger-ui-dist@[\d.]+\/[^"]+)"/g)].map(([, url]) => url!);
    expect(vendor.some((url) => url.endsWith('/swagger-ui-bundle.js')) && vendor.some((url) => url.endsWith('/swagger-ui.css'))).toBe(true);
    const installed = JSON.parse(readFileSync('node_modules/swagger-ui-dist/package.json', 'utf8')).version;
    for (const url of vendor) {
      expect(url).toContain(`@${installed}/`);
      const response = await fetch(`${api.url}${url}`);
      expect(response.headers.get('cache-control'), url).toBe('public, max-age=31536000, immutable');
    }
    const own = await fetch(`${api.url}/web/docs.js`);
    expect(own.headers.get('cache-control')).toBe('no-cache');
    const again = await fetch(`${api.url}/web/docs.js`, { headers: { 'If-None-Match': own.headers.get('etag')! } });
    expect(again.status).toBe(304);
    expect((await fetch(`${api.url}/web/no-such-file.js`)).status).toBe(404);
  });

  it('CORS for the origins of CORS_ORIGINS only', async () => {
    const preflight = await fetch(`${tuned.url}/api/diffusion`, {
      method: 'OPTIONS',
      headers: { Origin: 'https://app.example', 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'idempotency-key' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://app.example');
    expect(preflight.headers.get('access-control-allow-headers')?.toLowerCase()).toContain('idempotency-key');
    const allowed = await fetch(`${tuned.url}/api/models`, { headers: { Origin: 'https://app.example' } });
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://app.example');
    // A script of that origin may read the headers the OpenAPI document promises it.
    const exposed = allowed.headers.get('access-control-expose-headers')?.toLowerCase().split(/,\s*/);
    expect(exposed).toEqual(expect.arrayContaining(['location', 'retry-after', 'etag', 'ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset']));
    const other = await fetch(`${tuned.url}/api/models`, { headers: { Origin: 'https://other.example' } });
    expect(other.headers.get('access-control-allow-origin')).toBeNull();
  });
});
