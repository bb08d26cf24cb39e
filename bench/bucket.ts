// A benchmark's own bucket, so that MinIO's per-bucket request counts (bench/cpu.ts) are the
// benchmark's requests alone; the services create it as they start, dropBucket removes it.
import { DeleteBucketCommand, DeleteObjectsCommand } from '@aws-sdk/client-s3';
import type { StorageConfig } from '../common/config.js';
import { createS3, ObjectStore } from '../common/storage.js';

/** Empties the bucket and deletes it. */
export async function dropBucket(config: StorageConfig): Promise<void> {
  const store = new ObjectStore(config);
  const keys: string[] = [];
  for await (const { key } of store.list('')) keys.push(key);
  store.close();
  const s3 = createS3(config);
  for (let i = 0; i < keys.length; i += 1000) {
    const Objects = keys.slice(i, i + 1000).map((Key) => ({ Key }));
    await s3.send(new DeleteObjectsCommand({ Bucket: config.S3_BUCKET, Delete: { Objects, Quiet: true } }));
  }
  await s3.send(new DeleteBucketCommand({ Bucket: config.S3_BUCKET }));
}
