// One pass over jobs/ does two chores. The listing is in key order, so the objects of one job
// (input.png, job.json, output.png, webhooks.json) arrive together:
// - orphans: an API process that died between storing an input and creating its record leaves
//   an input no record will ever own; older than the grace period (far beyond any intake's
//   deadline), it is deleted;
// - retention: an ended job older than its tenant's retention (RETENTION_DAYS by default) has
//   its input, output, delivery log and idempotency claim deleted, and its record becomes an
//   `expired` tombstone. The bucket's lifecycle rule deletes what is left long after (storage.ts).
import type { JobRecord } from '../common/jobs.js';
import * as lifecycle from '../common/lifecycle.js';
import type { Logger } from '../common/logger.js';
import type { RecordStore } from '../common/records.js';
import { jobKeys, type ObjectStore } from '../common/storage.js';
import type { TenantStore } from '../common/tenants.js';
import type { IdempotencyStore } from './idempotency.js';

const DAY_MS = 24 * 3600 * 1000;

export interface SweeperOptions {
  store: ObjectStore;
  records: RecordStore;
  claims: IdempotencyStore;
  tenants: Pick<TenantStore, 'retentions'>;
  log: Logger;
  /** Time between passes (0: never). */
  intervalMs: number;
  /** An input younger than this may belong to a job still being created. */
  graceMs: number;
  /** Days a job is kept when its tenant sets nothing else. */
  retentionDays: number;
}

interface Group {
  id: string;
  input?: Date;
  record?: Date;
  output: boolean;
  webhooks: boolean;
}

export interface SweepCount {
  orphans: number;
  expired: number;
}

const jobOf = (key: string) => /^jobs\/([^/]+)\/([^/]+)$/.exec(key);

export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<SweepCount> | undefined;

  constructor(private readonly options: SweeperOptions) {}

  start(): void {
    if (!this.options.intervalMs) return;
    const pass = () => void this.sweep().catch((error: unknown) => this.options.log.warn({ err: error }, 'storage sweep failed'));
    this.timer = setInterval(pass, this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One pass; resolves with what it removed. */
  sweep(): Promise<SweepCount> {
    this.sweeping ??= this.pass().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async pass(): Promise<SweepCount> {
    const { store, log } = this.options;
    const retentions = await this.options.tenants.retentions();
    const shortest = Math.min(this.options.retentionDays, ...retentions.values());
    const count: SweepCount = { orphans: 0, expired: 0 };
    const finish = async (group: Group | undefined) => {
      if (!group) return;
      if (await this.orphan(group)) count.orphans++;
      else if (await this.expire(group, shortest, retentions)) count.expired++;
    };
    let group: Group | undefined;
    for await (const { key, lastModified } of store.list('jobs/')) {
      const match = jobOf(key);
      if (!match) continue;
      const [, id, name] = match;
      if (!group || group.id !== id) {
        await finish(group);
        group = { id: id!, output: false, webhooks: false };
      }
      if (name === 'input.png') group.input = lastModified;
      if (name === 'job.json') group.record = lastModified;
      if (name === 'output.png') group.output = true;
      if (name === 'webhooks.json') group.webhooks = true;
    }
    await finish(group);
    if (count.orphans || count.expired) log.info(count, 'storage sweep');
    return count;
  }

  private async orphan(group: Group): Promise<boolean> {
    if (!group.input || group.record || group.input.getTime() > Date.now() - this.options.graceMs) return false;
    await this.options.store.delete(jobKeys(group.id).input);
    return true;
  }

  /** Only a record written before the shortest retention can be due, and only one with objects left. */
  private async expire(group: Group, shortestDays: number, retentions: Map<string, number>): Promise<boolean> {
    if (!group.record || !(group.input || group.output || group.webhooks)) return false;
    if (group.record.getTime() > Date.now() - shortestDays * DAY_MS) return false;
    const record = await this.options.records.get(group.id);
    if (!record || !this.due(record, retentions)) return false;
    const { store, claims, records } = this.options;
    const keys = jobKeys(group.id);
    // The record last: should this pass stop half-way, the next one finds the job again.
    await Promise.all([store.delete(keys.input), store.delete(keys.output), store.delete(`jobs/${group.id}/webhooks.json`)]);
    if (record.idempotency) await claims.release(record.idempotency.key_hash, AbortSignal.timeout(10_000));
    await records.apply(group.id, (r) => lifecycle.expire(r));
    return true;
  }

  private due(record: JobRecord, retentions: Map<string, number>): boolean {
    const days = (record.tenant && retentions.get(record.tenant)) || this.options.retentionDays;
    return lifecycle.isTerminal(record) && record.status !== 'expired' && Date.parse(record.created_at) + days * DAY_MS < Date.now();
  }
}
