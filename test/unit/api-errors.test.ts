import { HTTPException } from 'hono/http-exception';
import { describe, expect, it } from 'vitest';
import { Conflict, PayloadTooLarge, toErrorResponse, Unavailable, ValidationError } from '../../api/errors.js';
import { baseUrl } from '../../api/env.js';
import { jobLinks } from '../../common/view.js';
import { createLogger } from '../../common/logger.js';

const log = createLogger('test', 'silent');

describe('toErrorResponse', () => {
  it('maps each typed error to its status, with the field and Retry-After', async () => {
    const validation = toErrorResponse(new ValidationError('priority', 'bad'), log);
    expect(validation.status).toBe(400);
    expect(await validation.json()).toEqual({ error: { code: 'validation_error', message: 'bad', field: 'priority' } });

    const busy = toErrorResponse(new Conflict('wait', { code: 'idempotency_in_progress', retryAfter: 1 }), log);
    expect([busy.status, busy.headers.get('retry-after')]).toEqual([409, '1']);
    const down = toErrorResponse(new Unavailable('down', { cause: new Error('ECONNREFUSED') }), log);
    expect([down.status, down.headers.get('retry-after')]).toEqual([503, '2']);
    expect(JSON.stringify(await down.json())).not.toContain('ECONNREFUSED');
    expect(toErrorResponse(new PayloadTooLarge('big', { closeConnection: true }), log).headers.get('connection')).toBe('close');
  });

  it('hides unknown errors behind a 500 without their message or stack', async () => {
    const response = toErrorResponse(new Error('secret at /srv/app.ts:12'), log);
    expect(response.status).toBe(500);
    expect(await response.json()).toEqual({ error: { code: 'internal_error', message: 'internal error' } });
  });

  it('keeps client errors raised by the framework in the same shape', async () => {
    const response = toErrorResponse(new HTTPException(400, { message: 'Malformed FormData request.' }), log);
    expect(await response.json()).toEqual({ error: { code: 'bad_request', message: 'Malformed FormData request.' } });
  });
});

describe('links', () => {
  const socket = { localAddress: '10.0.0.1', localPort: 8000 };
  const unset = { PUBLIC_BASE_URL: undefined, ALLOWED_HOSTS: [] };

  it('use PUBLIC_BASE_URL when set, whatever the Host', () => {
    const config = { ...unset, PUBLIC_BASE_URL: 'https://img.example.com/' };
    expect(baseUrl(config, 'http://evil.example/api/diffusion', socket)).toBe('https://img.example.com');
    expect(jobLinks('https://h', 'abc').events_url).toBe('https://h/api/jobs/abc/events');
  });

  it('never name a Host that is not allowed: they name the address the request came in on', () => {
    expect(baseUrl(unset, 'http://evil.example/api/diffusion?x=1', socket)).toBe('http://10.0.0.1:8000');
    expect(baseUrl(unset, 'http://10.0.0.1:8000/api/diffusion', socket)).toBe('http://10.0.0.1:8000');
    expect(baseUrl(unset, 'http://x/', { localAddress: '::ffff:127.0.0.1', localPort: 80 })).toBe('http://127.0.0.1:80');
    expect(baseUrl(unset, 'http://x/', { localAddress: '::1', localPort: 8000 })).toBe('http://[::1]:8000');
  });

  it('name a Host that ALLOWED_HOSTS lists, in any case', () => {
    const config = { ...unset, ALLOWED_HOSTS: ['Img.Internal:8000', 'localhost'] };
    expect(baseUrl(config, 'http://img.internal:8000/api/diffusion', socket)).toBe('http://img.internal:8000');
    expect(baseUrl(config, 'http://localhost/api/diffusion', socket)).toBe('http://localhost');
    expect(baseUrl(config, 'http://localhost:9999/api/diffusion', socket)).toBe('http://10.0.0.1:8000');
  });
});
