// Preloaded into a benchmarked service (node --import tsx --import ./bench/requests.ts ...): counts
// the Kafka requests its kafkajs clients send, by API name (kafkajs' request instrumentation
// events), and its S3 requests: the AWS SDK's by command, the object requests of s3http.ts (undici)
// by the command they stand for. The parent asks for the counts over the IPC channel
// ('requests?') and gets { requests: { kafka, s3 } }.
import { S3Client } from '@aws-sdk/client-s3';
import { subscribe } from 'node:diagnostics_channel';
import { Kafka, type Admin, type Consumer, type Producer } from 'kafkajs';
import { loadConfig, StorageConfigSchema } from '../common/config.js';

type Counts = Record<string, number>;
const kafka: Counts = {};
const s3: Counts = {};
const bump = (counts: Counts, key: string) => {
  counts[key] = (counts[key] ?? 0) + 1;
};

// Both packages are CommonJS, so this module and the service share their classes: patching the
// prototypes reaches every client the service creates.
type ClientFactory = (...args: unknown[]) => Producer | Consumer | Admin;
for (const kind of ['producer', 'consumer', 'admin'] as const) {
  const proto = Kafka.prototype as unknown as Record<string, ClientFactory>;
  const create = proto[kind]!;
  proto[kind] = function (this: Kafka, ...args: unknown[]) {
    const client = create.apply(this, args);
    (client as Producer).on((client as Producer).events.REQUEST, (event) => bump(kafka, event.payload.apiName));
    return client;
  };
}

const send = S3Client.prototype.send as (...args: unknown[]) => Promise<unknown>;
(S3Client.prototype as unknown as { send: typeof send }).send = function (this: S3Client, ...args: unknown[]) {
  bump(s3, (args[0] as object).constructor.name.replace(/Command$/, ''));
  return send.apply(this, args);
};

// undici announces every request it creates on this channel (its own and Node's fetch alike):
// those to the object store are s3http.ts's.
const OBJECT_COMMANDS: Record<string, string> = { GET: 'GetObject', PUT: 'PutObject', DELETE: 'DeleteObject' };
const storeOrigin = new URL(loadConfig(process.env, StorageConfigSchema).S3_ENDPOINT).origin;
subscribe('undici:request:create', (message) => {
  const { request } = message as { request: { origin: string | URL; method: string } };
  if (new URL(String(request.origin)).origin === storeOrigin) bump(s3, OBJECT_COMMANDS[request.method] ?? request.method);
});

if (process.send) {
  process.on('message', (message) => {
    if (message === 'requests?') process.send!({ requests: { kafka, s3 } });
  });
  // The channel must not keep a service alive that would otherwise exit.
  process.channel?.unref();
}
