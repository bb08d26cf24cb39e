// The API in-process on a real server (port 0) against the real Kafka and MinIO, with topic
// names of its own; plus small tools to make images, post jobs and read topics.
import { deflateSync } from 'node:zlib';
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { Admin, Kafka } from 'kafkajs';
import sharp, { type Color } from 'sharp';
import { createApp } from '../../api/app.js';
import { configureSharp } from '../../api/image.js';
import { listen, shutdown } from '../../api/server.js';
import { createServices, prepareKafka, prepareStorage, type Services } from '../../api/services.js';
import type { Config } from '../../common/config.js';
import { createKafka } from '../../common/kafka.js';
import { createLogger } from '../../common/logger.js';
import { readModelNames } from '../../common/models.js';
import { allTopics } from '../../common/topics.js';
import { testConfig, uniqueName } from './env.js';

export interface TestApi {
  url: string;
  config: Config;
  services: Services;
  close(): Promise<void>;
}

export interface StartOptions {
  /** false: leave Kafka alone (for a dead broker); the producer then connects on first use. */
  kafka?: boolean;
  /** false: leave object storage alone (for a dead endpoint). */
  storage?: boolean;
}

export async function startTestApi(overrides: Record<string, string> = {}, options: StartOptions = {}): Promise<TestApi> {
  const config = testConfig(overrides);
  configureSharp();
  const services = createServices(config, await readModelNames(config.MODEL_NAMES_FILE), createLogger('api-test', config.LOG_LEVEL));
  if (options.storage !== false) await prepareStorage(services);
  if (options.kafka !== false) await prepareKafka(services);
  const { server, url } = await listen(createApp(services), '127.0.0.1', 0, config);
  const close = async () => {
    // Topics of a test are of no use afterwards; deleting them keeps the shared broker small.
    if (options.kafka !== false) await services.admin.deleteTopics({ topics: allTopics(config.TOPIC_PREFIX, services.models) }).catch(() => {});
    await shutdown(server, services, 2000);
  };
  return { url, config, services, close };
}

export interface JobRequest {
  query?: Record<string, string>;
  fields?: Record<string, string>;
  image?: Uint8Array | null;
  filename?: string;
  contentType?: string;
  headers?: Record<string, string>;
}

/** POST /api/diffusion as a browser form would send it. */
export async function postJob(url: string, request: JobRequest = {}): Promise<Response> {
  const form = new FormData();
  for (const [name, value] of Object.entries(request.fields ?? {})) form.append(name, value);
  if (request.image !== null) {
    const image = request.image ?? (await pngImage(64, 48));
    form.append('image', new Blob([new Uint8Array(image)], { type: request.contentType ?? 'image/png' }), request.filename ?? 'input.png');
  }
  const query = new URLSearchParams(request.query ?? { model_name: 'tiny', prompt: 'a lighthouse' });
  return fetch(`${url}/api/diffusion?${query}`, { method: 'POST', body: form, headers: request.headers });
}

export const pngImage = (width: number, height: number, background: Color = { r: 40, g: 120, b: 200 }) =>
  sharp({ create: { width, height, channels: 3, background } }).png().toBuffer();

/** A PNG of noise: large and incompressible, so a cut lands inside the pixel data. */
export const noisePng = (width: number, height: number) =>
  sharp(Buffer.from(Array.from({ length: width * height * 3 }, () => Math.floor(Math.random() * 256))), {
    raw: { width, height, channels: 3 },
  })
    .png()
    .toBuffer();

function crc32(bytes: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? 0xedb88320 ^ (crc >>> 1) : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

export function pngChunk(type: string, data: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(data.length);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(crc32(body));
  return Buffer.concat([head, body, tail]);
}

/** A tiny, valid-looking PNG whose header declares width x height (a decompression bomb's header). */
export function pngHeaderOnly(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const idat = deflateSync(Buffer.alloc(width + 1)); // one row's worth, far short of the declared image
  return Buffer.concat([signature, pngChunk('IHDR', ihdr), pngChunk('IDAT', idat), pngChunk('IEND', Buffer.alloc(0))]);
}

/**
 * The JPEG with the frame size of its SOF header replaced: a 64x64 image that declares
 * 4096x4096, say. Its data runs out long before the declared size.
 */
export function jpegWithFrameSize(jpeg: Buffer, width: number, height: number): Buffer {
  const patched = Buffer.from(jpeg);
  // Segments after SOI: FF marker, then a big-endian length that counts itself.
  for (let at = 2; at + 9 < patched.length; at += 2 + patched.readUInt16BE(at + 2)) {
    const marker = patched[at + 1]!;
    // SOF0..SOF15, except DHT (C4), JPG (C8) and DAC (CC), which share the range.
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      patched.writeUInt16BE(height, at + 5);
      patched.writeUInt16BE(width, at + 7);
      return patched;
    }
  }
  throw new Error('no SOF segment in the JPEG');
}

export interface TopicMessage {
  key: string;
  value: string;
  partition: number;
  offset: string;
}

/** Messages of `topic` from the beginning until `until` holds (a count, or a test of those read so far). */
export async function readTopic(
  config: Config,
  topic: string,
  until: number | ((messages: TopicMessage[]) => boolean),
  timeoutMs = 15_000,
): Promise<TopicMessage[]> {
  const done = typeof until === 'number' ? (messages: TopicMessage[]) => messages.length >= until : until;
  const kafka: Kafka = createKafka(config, uniqueName('reader'));
  const consumer = kafka.consumer({ groupId: uniqueName('reader'), maxWaitTimeInMs: 200 });
  const messages: TopicMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`gave up after ${messages.length} messages from ${topic}`)), timeoutMs);
      void consumer.run({
        eachMessage: async ({ message, partition }) => {
          messages.push({ key: String(message.key), value: String(message.value), partition, offset: message.offset });
          if (done(messages)) {
            clearTimeout(timer);
            resolve();
          }
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
  return messages;
}

/** How many messages `topic` holds, from its watermarks: exact, and needs no consumer. */
export async function topicSize(admin: Admin, topic: string): Promise<number> {
  const partitions = await admin.fetchTopicOffsets(topic);
  return partitions.reduce((sum, { high, low }) => sum + Number(high) - Number(low), 0);
}

export const json = async <T = Record<string, any>>(response: Response): Promise<T> => (await response.json()) as T;

export interface EventStream {
  response: Response;
  /** The next event; undefined once the server ended the stream. Rejects after `timeoutMs`. */
  next(timeoutMs?: number): Promise<EventSourceMessage | undefined>;
  comments: string[];
  close(): void;
}

/** GET an SSE route and parse it with a real parser (eventsource-parser). */
export async function openEventStream(url: string, headers: Record<string, string> = {}): Promise<EventStream> {
  const abort = new AbortController();
  const response = await fetch(url, { headers, signal: abort.signal });
  const queue: EventSourceMessage[] = [];
  const comments: string[] = [];
  let ended = false;
  let wake: () => void = () => {};
  const parser = createParser({ onEvent: (event) => (queue.push(event), wake()), onComment: (comment) => (comments.push(comment), wake()) });
  if (response.ok && response.body) {
    void (async () => {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of response.body as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
      } catch {
        // aborted by close()
      }
      ended = true;
      wake();
    })();
  }
  const next = async (timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!queue.length && !ended) {
      if (Date.now() > deadline) throw new Error('no event in time');
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 100);
      });
    }
    return queue.shift();
  };
  return { response, next, comments, close: () => abort.abort() };
}
