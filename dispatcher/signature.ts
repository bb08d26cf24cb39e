// Standard Webhooks signatures: HMAC-SHA256 over `<webhook-id>.<webhook-timestamp>.<body>` with
// each of the tenant's secrets (whsec_ + base64 key), sent as `v1,<base64>` separated by spaces,
// so a receiver verifies with the old or the new secret while one is being rotated.
import { createHmac } from 'node:crypto';

export function signature(secrets: readonly string[], id: string, timestamp: number, body: string): string {
  const content = `${id}.${timestamp}.${body}`;
  return secrets
    .map((secret) => `v1,${createHmac('sha256', Buffer.from(secret.slice('whsec_'.length), 'base64')).update(content).digest('base64')}`)
    .join(' ');
}

/** The three headers of an attempt; the timestamp is the attempt's own (receivers refuse stale ones). */
export function webhookHeaders(secrets: readonly string[], id: string, body: string, now = new Date()): Record<string, string> {
  const timestamp = Math.floor(now.getTime() / 1000);
  return { 'webhook-id': id, 'webhook-timestamp': String(timestamp), 'webhook-signature': signature(secrets, id, timestamp, body) };
}
