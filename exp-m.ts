import { serve } from '@hono/node-server';
import type { HttpBindings } from '@hono/node-server';
import { Hono } from 'hono';
import { Busboy } from '@fastify/busboy';
import { request, Agent } from 'node:http';
const app = new Hono<{ Bindings: HttpBindings }>();
app.post('/a', async (c) => { const body = await c.req.parseBody(); const f = body.image as File; const b = Buffer.from(await f.arrayBuffer()); return c.json({ n: b.length }); });
app.post('/b', async (c) => {
  const bb = Busboy({ headers: c.env.incoming.headers as any, limits: { files: 1, fileSize: 20 << 20 } });
  const n = await new Promise<number>((resolve, reject) => { let size = 0; const chunks: Buffer[] = []; bb.on('file', (_n, stream) => { stream.on('data', (d: Buffer) => chunks.push(d)); stream.on('end', () => { size = Buffer.concat(chunks).length; }); }); bb.on('finish', () => resolve(size)); bb.on('error', reject); c.env.incoming.pipe(bb); });
  return c.json({ n });
});
const server = serve({ fetch: app.fetch, port: 0 }) as any;
await new Promise((r) => server.once('listening', r));
const port = server.address().port;
const img = Buffer.alloc(650 * 1024, 7);
const boundary = 'xxBOUNDARYxx';
const body = Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nhello\r\n--${boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n`), img, Buffer.from(`\r\n--${boundary}--\r\n`)]);
const agent = new Agent({ keepAlive: true, maxSockets: 8 });
const post = (path: string) => new Promise<void>((resolve, reject) => { const req = request({ port, path, method: 'POST', agent, headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'content-length': body.length } }, (res) => { res.resume(); res.on('end', () => resolve()); }); req.on('error', reject); req.end(body); });
for (const path of ['/a', '/b', '/a', '/b']) {
  const cpu = process.cpuUsage(); const t = performance.now();
  await Promise.all(Array.from({ length: 8 }, async () => { for (let i = 0; i < 60; i++) await post(path); }));
  const used = process.cpuUsage(cpu);
  console.log(path, 'ms/req cpu', ((used.user + used.system) / 1000 / 480).toFixed(2), 'wall', ((performance.now() - t) / 480).toFixed(2), 'rss', (process.memoryUsage().rss / 1048576).toFixed(0));
}
server.close(); agent.destroy();
