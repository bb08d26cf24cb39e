// Request ids on the real API (in-process, real Kafka and MinIO): every answer names its request
// in X-Request-Id, a client's valid id is kept, and an error body carries the same id.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postJob, startTestApi, type TestApi } from '../helpers/api.js';

let api: TestApi;

beforeAll(async () => {
  api = await startTestApi();
});

afterAll(async () => {
  await api?.close();
});

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('X-Request-Id', () => {
  it('is a fresh UUID on each answer to a request without one', async () => {
    const [first, second] = await Promise.all([fetch(`${api.url}/api/models`), fetch(`${api.url}/healthz`)]);
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(first.headers.get('x-request-id')).toMatch(UUID);
    expect(second.headers.get('x-request-id')).toMatch(UUID);
    expect(first.headers.get('x-request-id')).not.toBe(second.headers.get('x-request-id'));
  });

  it('keeps the client’s id and puts it in the error body, on an unknown route and a refused job', async () => {
    const missing = await fetch(`${api.url}/api/nothing-here`, { headers: { 'X-Request-Id': 'client-42' } });
    expect([missing.status, missing.headers.get('x-request-id')]).toEqual([404, 'client-42']);
    expect((await missing.json()).error).toMatchObject({ code: 'route_not_found', request_id: 'client-42' });

    const refused = await postJob(api.url, { query: { model_name: 'no-such-model', prompt: 'a fox' }, headers: { 'X-Request-Id': 'batch-7=' } });
    expect([refused.status, refused.headers.get('x-request-id')]).toEqual([400, 'batch-7=']);
    expect((await refused.json()).error).toMatchObject({ code: 'validation_error', field: 'model_name', request_id: 'batch-7=' });
  });

  it('replaces an id it will not log as given', async () => {
    const response = await fetch(`${api.url}/api/nothing-here`, { headers: { 'X-Request-Id': 'two words' } });
    const id = response.headers.get('x-request-id');
    expect(id).toMatch(UUID);
    expect((await response.json()).error.request_id).toBe(id);
  });
});
