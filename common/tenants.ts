// Per-tenant settings in object storage (tenants/<tenant>.json): for now the secrets that sign
// the tenant's webhooks. Jobs submitted without API keys (tenant null) use the deployment's own
// secrets, stored under a name no tenant can have (tenant names start with a letter or digit).
// A file may hold other settings too; they are kept as they are.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { ObjectStore } from './storage.js';

/** Standard Webhooks' symmetric secret: whsec_ and 24 to 64 random bytes in base64 (we make 32). */
const SECRET = /^whsec_[A-Za-z0-9+/]{32,88}={0,2}$/;
/** Signing with the newest secret and the one before lets receivers switch without losing a delivery. */
const SECRETS_KEPT = 2;
const JSON_TYPE = 'application/json';

export const TenantSettings = z.looseObject({
  v: z.literal(1),
  /** Newest first; every delivery is signed with each of them. */
  webhook_secrets: z.array(z.string().regex(SECRET)).default([]),
  /** Days this tenant's jobs are kept, instead of the deployment's RETENTION_DAYS. */
  retention_days: z.number().positive().optional(),
});
export type TenantSettings = z.infer<typeof TenantSettings>;

export const tenantKey = (tenant: string | null) => (tenant === null ? 'tenants/_deployment.json' : `tenants/${tenant}.json`);
export const newWebhookSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

export class TenantConflict extends Error {
  override name = 'TenantConflict';
}

export class TenantStore {
  constructor(private readonly store: ObjectStore) {}

  async get(tenant: string | null, signal?: AbortSignal): Promise<TenantSettings | undefined> {
    return (await this.read(tenant, signal))?.settings;
  }

  /** The secrets that sign this tenant's webhooks, newest first; the first delivery makes one. */
  async webhookSecrets(tenant: string | null, signal?: AbortSignal): Promise<string[]> {
    const secrets = (await this.get(tenant, signal))?.webhook_secrets ?? [];
    if (secrets.length) return secrets;
    return (await this.update(tenant, (s) => (s.webhook_secrets.length ? s : { ...s, webhook_secrets: [newWebhookSecret()] }), signal))
      .webhook_secrets;
  }

  /** A new secret first; the newest old one stays valid beside it until dropOldSecrets. */
  async rotateSecret(tenant: string | null, signal?: AbortSignal): Promise<TenantSettings> {
    const secret = newWebhookSecret();
    return this.update(tenant, (s) => ({ ...s, webhook_secrets: [secret, ...s.webhook_secrets].slice(0, SECRETS_KEPT) }), signal);
  }

  /** Only the newest secret stays: once every receiver verifies with it. */
  async dropOldSecrets(tenant: string | null, signal?: AbortSignal): Promise<TenantSettings> {
    return this.update(tenant, (s) => ({ ...s, webhook_secrets: s.webhook_secrets.slice(0, 1) }), signal);
  }

  /** Keeps this tenant's jobs `days` days (undefined: the deployment's default). */
  async setRetention(tenant: string, days: number | undefined, signal?: AbortSignal): Promise<TenantSettings> {
    return this.update(tenant, ({ retention_days: _old, ...settings }) => (days === undefined ? settings : { ...settings, retention_days: days }), signal);
  }

  /** Every tenant that keeps its jobs another time than the default, with its days. */
  async retentions(signal?: AbortSignal): Promise<Map<string, number>> {
    const found = new Map<string, number>();
    for await (const { key } of this.store.list('tenants/', signal)) {
      const tenant = /^tenants\/([a-z0-9][a-z0-9._-]{0,63})\.json$/.exec(key)?.[1];
      const days = tenant && (await this.get(tenant, signal))?.retention_days;
      if (tenant && days) found.set(tenant, days);
    }
    return found;
  }

  /** Compare-and-swap on the settings' ETag, so two rotations cannot lose one another. */
  private async update(tenant: string | null, change: (settings: TenantSettings) => TenantSettings, signal?: AbortSignal): Promise<TenantSettings> {
    for (let attempt = 0; attempt < 10; attempt++) {
      const current = await this.read(tenant, signal);
      const next = change(current?.settings ?? { v: 1, webhook_secrets: [] });
      if (current && next === current.settings) return next;
      const body = JSON.stringify(next);
      const key = tenantKey(tenant);
      const written = current
        ? await this.store.putIfMatch(key, body, JSON_TYPE, current.etag, signal)
        : await this.store.putIfAbsent(key, body, JSON_TYPE, signal);
      if (written !== undefined) return next;
    }
    throw new TenantConflict(`settings of tenant ${tenant ?? '(none)'}: too many concurrent updates`);
  }

  private async read(tenant: string | null, signal?: AbortSignal): Promise<{ settings: TenantSettings; etag: string } | undefined> {
    const stored = await this.store.get(tenantKey(tenant), signal);
    if (!stored) return undefined;
    return { settings: TenantSettings.parse(JSON.parse(stored.bytes.toString('utf8'))), etag: stored.etag };
  }
}
