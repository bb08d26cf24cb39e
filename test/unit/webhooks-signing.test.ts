// Our signatures and the submission's webhook fields. Signatures are checked by the
// `standardwebhooks` package, the specification's reference implementation, not by our code.
import { Webhook } from 'standardwebhooks';
import { describe, expect, it } from 'vitest';
import { submissionFields } from '../../api/submission.js';
import { webhookOf } from '../../api/webhook.js';
import type { EventType } from '../../common/jobs.js';
import { newWebhookSecret } from '../../common/tenants.js';
import { webhookHeaders } from '../../dispatcher/signature.js';

describe('webhook signatures', () => {
  const body = JSON.stringify({ type: 'job.succeeded', timestamp: '2025-01-01T00:00:00.000Z', data: { id: 'x' } });

  it('verify with the reference implementation', () => {
    const secret = newWebhookSecret();
    const headers = webhookHeaders([secret], 'msg_1', body);
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
  });

  it('carry one signature per secret while one is rotated: either secret verifies', () => {
    const [next, previous] = [newWebhookSecret(), newWebhookSecret()];
    const headers = webhookHeaders([next, previous], 'msg_2', body);
    expect(headers['webhook-signature']!.split(' ')).toHaveLength(2);
    expect(() => new Webhook(next).verify(body, headers)).not.toThrow();
    expect(() => new Webhook(previous).verify(body, headers)).not.toThrow();
    expect(() => new Webhook(newWebhookSecret()).verify(body, headers)).toThrow();
  });

  it('fail on a changed body, id or a stale timestamp', () => {
    const secret = newWebhookSecret();
    const headers = webhookHeaders([secret], 'msg_3', body);
    expect(() => new Webhook(secret).verify(body.replace('x', 'y'), headers)).toThrow();
    expect(() => new Webhook(secret).verify(body, { ...headers, 'webhook-id': 'msg_4' })).toThrow();
    const old = webhookHeaders([secret], 'msg_3', body, new Date(Date.now() - 3_600_000));
    expect(() => new Webhook(secret).verify(body, old)).toThrow(/timestamp/i);
  });
});

describe('webhook fields of a submission', () => {
  const fields = submissionFields(['tiny']);
  const parse = (raw: Record<string, string>) => fields.parse(raw);
  const strict = { allowPrivate: false };

  it('default to the endings, and take a list of events', () => {
    expect(webhookOf(parse({ webhook_url: 'https://hooks.example.com/a' }), strict)).toEqual({
      url: 'https://hooks.example.com/a',
      events: ['succeeded', 'failed', 'canceled', 'aborted'],
    });
    expect(webhookOf(parse({ webhook_url: 'https://hooks.example.com/a', webhook_events: 'started, progress,succeeded,progress' }), strict)?.events).toEqual([
      'started',
      'progress',
      'succeeded',
    ]);
    expect(webhookOf(parse({}), strict)).toBeNull();
  });

  it('refuse unknown events, events without a URL, and URLs that are not http(s)', () => {
    expect(fields.safeParse({ webhook_events: 'queued' }).success).toBe(false);
    expect(fields.safeParse({ webhook_events: '' }).success).toBe(false);
    expect(fields.safeParse({ webhook_url: 'ftp://hooks.example.com/' }).success).toBe(false);
    expect(() => webhookOf(parse({ webhook_events: 'succeeded' }), strict)).toThrow(expect.objectContaining({ field: 'webhook_events' }));
  });

  it('refuse loopback, private and metadata addresses unless private ones are allowed (metadata never)', () => {
    for (const url of ['http://127.0.0.1:8080/', 'http://[::1]:8080/', 'http://localhost/', 'http://10.0.0.1/', 'http://169.254.169.254/']) {
      expect(() => webhookOf(parse({ webhook_url: url }), strict), url).toThrow(expect.objectContaining({ field: 'webhook_url' }));
    }
    expect(webhookOf(parse({ webhook_url: 'http://127.0.0.1:8080/' }), { allowPrivate: true })?.url).toBe('http://127.0.0.1:8080/');
    expect(() => webhookOf(parse({ webhook_url: 'http://169.254.169.254/' }), { allowPrivate: true })).toThrow();
  });

  it('use the key’s default when the submission names no URL', () => {
    const fallback = { url: 'https://hooks.example.com/key', events: ['queued', 'succeeded'] as EventType[] };
    expect(webhookOf(parse({}), { ...strict, fallback: fallback })).toEqual({
      url: 'https://hooks.example.com/key',
      events: ['succeeded'],
    });
    expect(webhookOf(parse({ webhook_events: 'started' }), { ...strict, fallback: fallback })?.events).toEqual(['started']);
    expect(webhookOf(parse({ webhook_url: 'https://hooks.example.com/own' }), { ...strict, fallback: fallback })).toEqual({
      url: 'https://hooks.example.com/own',
      events: ['succeeded', 'failed', 'canceled', 'aborted'],
    });
  });
});
