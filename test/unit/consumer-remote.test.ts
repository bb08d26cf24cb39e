// RemoteRunner over a fake socket: what a lost connection means for the jobs it carried.
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { WebSocket } from 'ws';
import { FrameDecoder } from '../../common/frames.js';
import { createLogger } from '../../common/logger.js';
import { RemoteRunner } from '../../consumer/remote/runner.js';

class FakeSocket extends EventEmitter {
  readonly sent: string[] = [];
  send(data: Buffer) {
    for (const frame of new FrameDecoder().push(data)) this.sent.push(`${String(frame.header.type)}:${String(frame.header.id)}`);
  }
  close() {
    this.emit('close', 1006, Buffer.from(''));
  }
  terminate() {}
}

const ready = { v: 1 as const, type: 'ready' as const, model: 'tiny', device: 'cpu', dtype: 'float32', max_batch: 2, load_seconds: 0 };
const params = { prompt: 'p', negative_prompt: null, strength: 0.5, steps: 2, guidance_scale: 1, seed: 1 };

function remote() {
  const socket = new FakeSocket();
  const runner = new RemoteRunner(socket as unknown as WebSocket, { worker: 'w', ready, leaseMs: 60_000, logger: createLogger('test', 'silent'), onClose() {} });
  return { socket, runner };
}

describe('RemoteRunner', () => {
  it('loses the jobs of a dropped connection as shared (no attempt spent) unless one ran alone', async () => {
    const first = remote();
    const outcomes = [first.runner.run({ id: 'a', params: params, image: new Uint8Array() }), first.runner.run({ id: 'b', params: params, image: new Uint8Array() })];
    await new Promise((resolve) => setImmediate(resolve));
    first.socket.close();
    for (const outcome of await Promise.all(outcomes)) expect(outcome).toMatchObject({ ok: false, code: 'runner_crashed', shared: true });

    const second = remote();
    const alone = second.runner.run({ id: 'a', params: params, image: new Uint8Array(), solo: true });
    await new Promise((resolve) => setImmediate(resolve));
    second.socket.close();
    expect(await alone).toMatchObject({ ok: false, code: 'runner_crashed', shared: false });
  });

  it('holds a solo job until the runner is empty, and lets nothing join it', async () => {
    const { socket, runner } = remote();
    void runner.run({ id: 'a', params: params, image: new Uint8Array() });
    const solo = runner.run({ id: 's', params: params, image: new Uint8Array(), solo: true });
    const later = runner.run({ id: 'b', params: params, image: new Uint8Array() });
    await new Promise((resolve) => setImmediate(resolve));
    expect(socket.sent).toEqual(['job:a']);
    socket.emit('message', errorFrame('a'), true);
    await new Promise((resolve) => setImmediate(resolve));
    expect(socket.sent).toEqual(['job:a', 'job:s']);
    socket.emit('message', errorFrame('s'), true);
    await solo;
    await new Promise((resolve) => setImmediate(resolve));
    expect(socket.sent).toEqual(['job:a', 'job:s', 'job:b']);
    socket.close();
    await later;
  });
});

function errorFrame(id: string): Buffer {
  const header = Buffer.from(JSON.stringify({ v: 1, type: 'error', id, code: 'internal', retryable: true, message: 'x' }));
  const frame = Buffer.alloc(8 + header.length);
  frame.writeUInt32BE(header.length, 0);
  header.copy(frame, 4);
  frame.writeUInt32BE(0, 4 + header.length);
  return frame;
}
