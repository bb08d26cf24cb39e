// ObjectStore's object requests (signed by s3http.ts) against the real MinIO: what each answers,
// conditions, streams, keys that need encoding, and the errors a caller must see.
import { GetObjectCommand } from '@aws-sdk/client-s3';
import aws4 from 'aws4';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { integrityHeaders, S3Error } from '../../common/s3http.js';
import { createS3, ObjectStore } from '../../common/storage.js';
import { testConfig } from '../helpers/env.js';

const config = testConfig();
const store = new ObjectStore(config);
const prefix = `storage-test/${Date.now().toString(36)}`;

describe('ObjectStore object requests', () => {
  it('writes, reads back with the ETag the write gave, and deletes', async () => {
    await store.ensureBucket();
    const key = `${prefix}/a.json`;
    const etag = await store.put(key, '{"a":1}', 'application/json');
    expect(etag).toMatch(/^"[0-9a-f-]+"$/);
    expect(await store.get(key)).toEqual({ bytes: Buffer.from('{"a":1}'), etag });
    // The SDK sees the same object, with its content type.
    const s3 = createS3(config);
    const seen = await s3.send(new GetObjectCommand({ Bucket: config.S3_BUCKET, Key: key }));
    expect([seen.ContentType, seen.ETag, await seen.Body!.transformToString()]).toEqual(['application/json', etag, '{"a":1}']);
    s3.destroy();
    await store.delete(key);
    expect(await store.get(key)).toBeUndefined();
    await store.delete(key); // deleting a missing key succeeds, as in S3
  });

  it('writes conditionally: once if absent, only over the ETag it was given', async () => {
    const key = `${prefix}/record.json`;
    const first = await store.putIfAbsent(key, 'one', 'text/plain');
    expect(first).toBeDefined();
    expect(await store.putIfAbsent(key, 'two', 'text/plain')).toBeUndefined();
    const second = await store.putIfMatch(key, 'three', 'text/plain', first!);
    expect(second).toBeDefined();
    expect(await store.putIfMatch(key, 'four', 'text/plain', first!)).toBeUndefined(); // stale
    expect((await store.getBytes(key))?.toString()).toBe('three');
    expect(await store.putIfMatch(`${prefix}/missing.json`, 'x', 'text/plain', second!)).toBeUndefined();
  });

  it('streams a large object with its length, and answers undefined for a missing one', async () => {
    const key = `${prefix}/large.bin`;
    const bytes = Buffer.alloc(3 * 1024 * 1024 + 7, 0);
    for (let i = 0; i < bytes.length; i += 4096) bytes[i] = i % 251;
    await store.put(key, new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), 'application/octet-stream');
    const object = await store.open(key);
    expect(object?.length).toBe(bytes.length);
    const chunks: Buffer[] = [];
    for await (const chunk of object!.body) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(bytes)).toBe(true);
    expect(await store.open(`${prefix}/nothing`)).toBeUndefined();
  });

  it('keeps keys that need encoding as they are, for itself and for listings', async () => {
    const key = `${prefix}/tenant a+b/ü 100%/x?y#z.json`;
    await store.put(key, 'k', 'text/plain');
    expect((await store.getBytes(key))?.toString()).toBe('k');
    const listed = [];
    for await (const object of store.list(`${prefix}/tenant a+b/`)) listed.push(object.key);
    expect(listed).toEqual([key]);
  });

  it('throws the store\'s error, with its code and status, for what the caller cannot handle', async () => {
    const missingBucket = new ObjectStore(config, `no-such-bucket-${Date.now().toString(36)}`);
    const error = await missingBucket.put('k', 'v', 'text/plain').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(S3Error);
    expect(error).toMatchObject({ name: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } });
    missingBucket.close();
    const wrongKey = new ObjectStore({ ...config, S3_SECRET_KEY: 'not-the-secret' });
    await expect(wrongKey.get(`${prefix}/a.json`)).rejects.toMatchObject({ name: 'SignatureDoesNotMatch', $metadata: { httpStatusCode: 403 } });
    wrongKey.close();
  });

  it('has a body its checksum does not match refused by the store', async () => {
    const sent = Buffer.alloc(64 * 1024, 1);
    const meant = Buffer.from(sent).fill(2, 100, 101); // one byte changed on the way
    const url = new URL(config.S3_ENDPOINT);
    const path = `/${config.S3_BUCKET}/${prefix}/changed.bin`;
    const put = (checksummed: Buffer) => {
      const signed = aws4.sign(
        { host: url.host, path, method: 'PUT', service: 's3', region: config.S3_REGION, body: sent, headers: integrityHeaders(checksummed) },
        { accessKeyId: config.S3_ACCESS_KEY, secretAccessKey: config.S3_SECRET_KEY },
      );
      return request(`${url.origin}${path}`, { method: 'PUT', headers: signed.headers as Record<string, string>, body: sent });
    };
    const refused = await put(meant);
    expect(refused.statusCode).toBe(400);
    expect(await refused.body.text()).toContain('XAmzContentChecksumMismatch');
    expect(await store.get(`${prefix}/changed.bin`)).toBeUndefined();
    const stored = await put(sent);
    await stored.body.dump();
    expect(stored.statusCode).toBe(200);
    expect((await store.getBytes(`${prefix}/changed.bin`))?.equals(sent)).toBe(true);
  });

  it('stops a request its signal aborts', async () => {
    const controller = new AbortController();
    controller.abort(new Error('client went away'));
    await expect(store.put(`${prefix}/aborted`, 'x', 'text/plain', controller.signal)).rejects.toThrow();
    expect(await store.get(`${prefix}/aborted`)).toBeUndefined();
  });
});
