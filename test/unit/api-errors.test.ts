import { HTTPException } from 'hono/http-exception';
import { describe, expect, it } from 'vitest';
import { Conflict, PayloadTooLarge, toErrorResponse, Unavailable, ValidationError } from '../../api/errors.js';
import { baseUrl } from '../../api/env.js';
import { jobLinks } from '../../api/view.js';
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
  it('use PUBLIC_BASE_URL when set, else the request origin', () => {
    expect(baseUrl('https://img.example.com/', 'http://10.0.0.1:8000/api/diffusion')).toBe('https://img.example.com');
    expect(baseUrl(undefined, 'http://10.0.0.1:8000/api/diffusion?x=1')).toBe('http://10.0.0.1:8000');
    expect(jobLinks('https://h', 'abc').events_url).toBe('https://h/api/jobs/abc/events');
  });
});
