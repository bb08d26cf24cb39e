// The OpenAPI document (validated by a real validator), Swagger UI, the probes and the
// JSON 404 for unknown routes.
import { compileErrors, validate } from '@readme/openapi-parser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json, startTestApi, type TestApi } from '../helpers/api.js';

let api: TestApi;
beforeAll(async () => {
  api = await startTestApi();
});
afterAll(() => api?.close());

type Parameter = { name: string; in: string; schema: Record<string, any> };
type Response = { headers?: Record<string, { required?: boolean }> };
type Operation = { operationId?: string; parameters?: Parameter[]; responses: Record<string, Response>; requestBody?: any };
type Document = { openapi: string; paths: Record<string, Record<string, Operation>> };

describe('GET /openapi.json', () => {
  let document: Document;
  beforeAll(async () => {
    const response = await fetch(`${api.url}/openapi.json`);
    expect(response.status).toBe(200);
    document = await json<Document>(response);
  });

  it('is a valid OpenAPI document', async () => {
    const result = await validate(structuredClone(document) as never);
    expect(result.valid, result.valid ? '' : compileErrors(result)).toBe(true);
  });

  it('lists every route', () => {
    const routes = Object.entries(document.paths).flatMap(([path, methods]) => Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`));
    expect(routes.sort()).toEqual(
      [
        'POST /api/diffusion',
        'GET /api/jobs',
        'GET /api/jobs/{id}',
        'DELETE /api/jobs/{id}',
        'GET /api/jobs/{id}/preview',
        'GET /api/jobs/{id}/events',
        'GET /api/jobs/{id}/webhooks',
        'GET /api/results/{id}',
        'GET /api/models',
        'GET /api/workers',
        'GET /healthz',
        'GET /readyz',
      ].sort(),
    );
  });

  it('gives every operation an operationId of its own', () => {
    const ids = Object.values(document.paths).flatMap((methods) => Object.values(methods).map((operation) => operation.operationId));
    expect(ids.every((id) => typeof id === 'string' && /^[a-z][A-Za-z]+$/.test(id)), ids.join(', ')).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(document.paths['/api/diffusion']!.post!.operationId).toBe('submitJob');
  });

  it('describes the upload as multipart/form-data with a binary image, and each other field once, as a query parameter', () => {
    const post = document.paths['/api/diffusion']!.post!;
    const schema = post.requestBody.content['multipart/form-data'].schema;
    expect(schema.properties).toEqual({ image: expect.objectContaining({ type: 'string', format: 'binary' }) });
    expect(schema.required).toEqual(['image']);
    const names = post.parameters!.map((parameter) => parameter.name);
    expect(new Set(names).size).toBe(names.length);
    expect(post.parameters!.every((parameter) => parameter.in === 'query' || parameter.in === 'header')).toBe(true);
    expect(names).toEqual(
      expect.arrayContaining(['model_name', 'prompt', 'priority', 'negative_prompt', 'strength', 'steps', 'guidance_scale', 'seed', 'webhook_url', 'webhook_events']),
    );
    expect(Object.keys(post.responses).sort()).toEqual(['202', '400', '401', '409', '413', '415', '422', '429', '503']);
  });

  it('states each numeric field\'s range and default as numbers (x-number, read by the web page), in agreement with its pattern', () => {
    const fields = Object.fromEntries(document.paths['/api/diffusion']!.post!.parameters!.map((parameter) => [parameter.name, parameter.schema]));
    const numeric = Object.entries(fields as Record<string, { pattern: string; 'x-number'?: Record<string, number | boolean> }>).filter(([, schema]) => schema['x-number']);
    expect(numeric.map(([name]) => name).sort()).toEqual(['guidance_scale', 'preview_every', 'seed', 'steps', 'strength']);
    for (const [name, schema] of numeric) {
      const { minimum, maximum, exclusiveMinimum, integer, default: fallback } = schema['x-number'] as { minimum: number; maximum: number; exclusiveMinimum?: boolean; integer: boolean; default?: number };
      const pattern = new RegExp(schema.pattern);
      const step = integer ? 1 : 0.5;
      expect(pattern.test(String(minimum)), `${name} ${minimum}`).toBe(!exclusiveMinimum);
      expect(pattern.test(String(minimum + step)), name).toBe(true);
      expect(pattern.test(String(maximum)), name).toBe(true);
      expect(pattern.test(String(maximum + 1)), name).toBe(false);
      if (fallback !== undefined) expect(pattern.test(String(fallback)), `${name} default`).toBe(true);
    }
  });

  it('prefills in Swagger UI only what a user would not be surprised to send', () => {
    // Try it out fills each input with its example (or default) and sends it. Of a submission
    // only the model, a prompt and the priority: not one seed for every image, a negative prompt
    // nobody wrote, a parameter the chosen model may not take (422), a webhook to example.com or
    // one Idempotency-Key for every try. Of the job list only the page size: a filter or a cursor
    // nobody chose would empty it. Every other route's parameters have an example.
    const prefilled = (parameter: Parameter) => /"(example|default)"/.test(JSON.stringify({ ...parameter, schema: { ...parameter.schema, 'x-number': undefined } }));
    const submit = document.paths['/api/diffusion']!.post!.parameters!;
    expect(submit.filter(prefilled).map((parameter) => parameter.name)).toEqual(['model_name', 'prompt', 'priority']);
    expect(document.paths['/api/jobs']!.get!.parameters!.filter(prefilled).map((parameter) => parameter.name)).toEqual(['limit']);
    for (const [path, methods] of Object.entries(document.paths)) {
      if (path === '/api/diffusion' || path === '/api/jobs') continue;
      for (const operation of Object.values(methods)) {
        for (const parameter of operation.parameters ?? []) expect(prefilled(parameter), `${path} ${parameter.name}`).toBe(true);
      }
    }
  });

  it('documents Retry-After on every 429 and on the 503s that send it, and RateLimit-* on the answers to a key', () => {
    const keyless = new Set(['/api/models', '/healthz', '/readyz']);
    for (const [path, methods] of Object.entries(document.paths)) {
      for (const operation of Object.values(methods)) {
        for (const [status, response] of Object.entries(operation.responses)) {
          const headers = response.headers ?? {};
          const where = `${operation.operationId} ${status}`;
          // /readyz answers its 503 itself, without Retry-After; POST /api/diffusion's model_unavailable has none either.
          if (status === '429' || (status === '503' && path !== '/readyz')) expect(headers['Retry-After'], where).toBeDefined();
          if (status === '429' || (status === '503' && !['/readyz', '/api/diffusion'].includes(path))) expect(headers['Retry-After']!.required, where).toBe(true);
          const rateFields = ['RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset'].filter((name) => name in headers);
          expect(rateFields.length, where).toBe(keyless.has(path) || status === '401' ? 0 : 3);
        }
      }
    }
  });

  it('documents an error response with an example on every route that can fail', () => {
    for (const [path, methods] of Object.entries(document.paths)) {
      if (path === '/healthz') continue;
      for (const operation of Object.values(methods)) {
        const errors = Object.entries(operation.responses).filter(([status]) => Number(status) >= 400);
        expect(errors.length, path).toBeGreaterThan(0);
        for (const [, response] of errors) expect(JSON.stringify(response), path).toMatch(/"example"/);
      }
    }
  });
});

describe('GET /docs', () => {
  it('serves Swagger UI pointed at /openapi.json (in a browser: test/integration/browser.test.ts)', async () => {
    const response = await fetch(`${api.url}/docs`);
    expect(response.status).toBe(200);
    const html = await response.text();
    expect(html).toMatch(/swagger-ui-bundle\.js/);
    const starter = /<script src="(\/web\/docs\.js)"><\/script>/.exec(html)?.[1];
    expect(await (await fetch(`${api.url}${starter}`)).text()).toContain("url: '/openapi.json'");
  });
});

describe('probes', () => {
  it('answers /healthz and /readyz', async () => {
    expect(await json(await fetch(`${api.url}/healthz`))).toEqual({ status: 'ok' });
    const ready = await fetch(`${api.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await json(ready)).toEqual({ status: 'ready', checks: { kafka: 'ok', storage: 'ok' } });
  });
});

describe('unknown routes', () => {
  it('answer a JSON 404 (a known path with another method: 405, see api-http.test.ts)', async () => {
    for (const [method, path] of [['GET', '/nope'], ['PUT', '/api/nope'], ['GET', '/api/job']]) {
      const response = await fetch(`${api.url}${path}`, { method });
      expect(response.status).toBe(404);
      expect(await json(response)).toEqual({ error: { code: 'route_not_found', message: `no route for ${method} ${path}`, request_id: expect.any(String) } });
    }
  });
});
