// The request id (api/requestid.ts) on a small app with the API's error mapping: which incoming
// ids are kept, the X-Request-Id answer, and the id in the log lines and the error body of the
// request it names, also when requests overlap.
import { Writable } from 'node:stream';
import { Hono } from 'hono';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { toErrorResponse, Unavailable } from '../../api/errors.js';
import { MAX_REQUEST_ID_LENGTH, requestIdMixin, requestIds } from '../../api/requestid.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function testApp() {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({ write: (chunk, _, done) => done(void lines.push(JSON.parse(String(chunk)))) });
  const log = pino({ level: 'info', mixin: requestIdMixin }, sink);
  const app = new Hono();
  app.use('*', requestIds());
  app.onError((error) => toErrorResponse(error, log));
  app.get('/work/:ms', async (c) => {
    await new Promise((resolve) => setTimeout(resolve, Number(c.req.param('ms'))));
    log.info({ ms: c.req.param('ms') }, 'worked');
    return c.json({ ok: true });
  });
  app.get('/down', () => {
    throw new Unavailable('the queue (Kafka) is unavailable');
  });
  app.get('/bug', async () => {
    await Promise.resolve();
    throw new Error('a bug');
  });
  log.info('outside any request');
  return { app, lines };
}

const get = (app: Hono, path: string, id?: string) => app.request(path, { headers: id === undefined ? {} : { 'X-Request-Id': id } });

describe('request ids', () => {
  it('makes a UUID for a request without one, answers it and logs it on the request’s lines only', async () => {
    const { app, lines } = testApp();
    const response = await get(app, '/work/0');
    const id = response.headers.get('x-request-id');
    expect(id).toMatch(UUID);
    expect(lines).toEqual([
      expect.not.objectContaining({ request_id: expect.anything() }),
      expect.objectContaining({ msg: 'worked', request_id: id }),
    ]);
  });

  it('keeps a client’s id of letters, digits, _ - = up to the length limit, and replaces any other', async () => {
    const { app } = testApp();
    const answered = async (id: string) => (await get(app, '/work/0', id)).headers.get('x-request-id');
    for (const id of ['abc-123_DEF=', 'x'.repeat(MAX_REQUEST_ID_LENGTH)]) expect(await answered(id)).toBe(id);
    for (const id of ['', 'has space', 'semi;colon', 'ünï', '<script>', 'x'.repeat(MAX_REQUEST_ID_LENGTH + 1)]) expect(await answered(id)).toMatch(UUID);
  });

  it('puts the id in the error body and on the error’s log line', async () => {
    const { app, lines } = testApp();
    for (const [path, status, code] of [['/down', 503, 'unavailable'], ['/bug', 500, 'internal_error']] as const) {
      const response = await get(app, path, `req-${status}`);
      expect([response.status, response.headers.get('x-request-id')]).toEqual([status, `req-${status}`]);
      expect(await response.json()).toEqual({ error: { code, message: expect.any(String), request_id: `req-${status}` } });
      expect(lines.at(-1)).toMatchObject({ request_id: `req-${status}` });
    }
  });

  it('never mixes the ids of overlapping requests', async () => {
    const { app, lines } = testApp();
    await Promise.all([get(app, '/work/30', 'slow'), get(app, '/work/1', 'fast'), get(app, '/work/15', 'middle')]);
    const worked = lines.filter((line) => line.msg === 'worked').map((line) => [line.ms, line.request_id]);
    expect(worked).toEqual([
      ['1', 'fast'],
      ['15', 'middle'],
      ['30', 'slow'],
    ]);
  });
});
