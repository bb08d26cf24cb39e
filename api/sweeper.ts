// Storage sweeps, by an index of due checks rather than a pass over every job. Intake writes
// `sweep/due/<time>/<id>` (a "look at this job then" entry; jobs that arrive together share
// one, `sweep/due/<time>/group-<uuid>` listing their ids) before it stores the input;
// object listings come in key order, so a pass reads the entries that are due and stops at the
// first that is not: its work follows what is due, not how many jobs are stored. For each:
// - no record: an API process died between storing the input and creating the record; the
//   input no record will ever own is deleted (the first check comes ORPHAN_GRACE_MS after
//   intake, far beyond any intake's deadline);
// - queued or running: checked again a grace period later;
// - ended: past its tenant's retention (RETENTION_DAYS by default), its input, output, delivery
//   log and idempotency claim are deleted and its record becomes an `expired` tombstone;
//   otherwise it is checked again when its retention ends.
// An entry is a hint: the record decides, so a duplicate or stale entry does no harm. A
// retention shortened since the last pass (or a bucket from before the index) takes one pass
// over every job, which expires what is due and writes each job's entry. One replica sweeps
// at a time: it holds a lease (a conditional write of sweep/lease.json) for a few intervals.
import { randomUUID } from 'node:crypto';
import { removeFromList } from '../common/joblist.js';
import type { JobRecord } from '../common/jobs.js';
import * as lifecycle from '../common/lifecycle.js';
import type { Logger } from '../common/logger.js';
import type { RecordStore } from '../common/records.js';
import { jobKeys, jobObjectOf, JOBS_PREFIX, type ObjectStore } from '../common/storage.js';
import type { TenantStore } from '../common/tenants.js';
import type { IdempotencyStore } from './idempotency.js';

const DAY_MS = 24 * 3600 * 1000;
const DUE = 'sweep/due/';
const LEASE = 'sweep/lease.json';
/** The retentions the index was written for: a shorter one since needs a full pass. */
const STATE = 'sweep/state.json';
const JSON_TYPE = 'application/json';
/** An entry's body: its key says it all (an empty body makes the S3 client warn of a stream of unknown length). */
const ENTRY = '{}';
/** How long the first intake of a group waits for others before its entry is written. */
const ENTRY_LINGER_MS = 10;
/** The name of an entry that lists several jobs (a group commit of intakes). */
const GROUP = 'group-';

export interface SweeperOptions {
  store: ObjectStore;
  records: RecordStore;
  claims: IdempotencyStore;
  tenants: Pick<TenantStore, 'retentions'>;
  log: Logger;
  /** Time between passes (0: never). */
  intervalMs: number;
  /** An input younger than this may belong to a job still being created; live jobs are checked this often. */
  graceMs: number;
  /** Days a job is kept when its tenant sets nothing else. */
  retentionDays: number;
  /** How long an entry write may take (the intake's own deadline races it too). */
  writeTimeoutMs: number;
}

export interface SweepCount {
  orphans: number;
  expired: number;
  /** Due entries read (the pass's work). */
  checked: number;
}

interface Retentions {
  default_days: number;
  tenants: Record<string, number>;
}

/** The key of a check of job `id` at `dueMs`: thirteen digits of milliseconds sort as times do. */
export const dueKey = (dueMs: number, id: string) => `${DUE}${String(Math.max(0, Math.round(dueMs))).padStart(13, '0')}/${id}`;
const parseDue = (key: string) => /^sweep\/due\/(\d{13})\/([^/]+)$/.exec(key);

export class Sweeper {
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<SweepCount> | undefined;
  private readonly holder = randomUUID();
  /** First-check entries waiting for the write in flight to end. */
  private waiting: { id: string; resolve(): void; reject(error: unknown): void }[] = [];
  private writing: Promise<void> | undefined;
  private lingering: NodeJS.Timeout | undefined;

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

  /**
   * Writes the entry of a job's first check, a grace period from now; intake awaits this before
   * it stores the input. Entries are written as a group commit: the jobs that arrive while one
   * write is in flight share the next (one entry listing their ids), so under load the index
   * costs a fraction of a request per job.
   */
  scheduleFirstCheck(id: string): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ id, resolve, reject });
      // A short linger gathers the intakes of the next few milliseconds into the same write; the
      // request checks its image meanwhile, and ends the linger once it needs the entry (writeEntriesNow).
      this.lingering ??= setTimeout(() => {
        this.lingering = undefined;
        this.writeWaiting();
      }, ENTRY_LINGER_MS);
    });
  }

  /**
   * Writes the waiting entries now instead of at the linger's end: called by an intake that has
   * checked its image and needs its entry, so a small image's fast check never waits for the
   * linger (the jobs of a busy moment still share the write).
   */
  writeEntriesNow(): void {
    if (!this.lingering) return;
    clearTimeout(this.lingering);
    this.lingering = undefined;
    this.writeWaiting();
  }

  private writeWaiting(): void {
    if (this.writing || this.lingering || !this.waiting.length) return;
    const group = this.waiting.splice(0);
    const ids = group.map((entry) => entry.id);
    const due = Date.now() + this.options.graceMs;
    const [key, body] = ids.length === 1 ? [dueKey(due, ids[0]!), ENTRY] : [dueKey(due, `${GROUP}${randomUUID()}`), JSON.stringify({ ids })];
    this.writing = this.options.store
      .put(key, body, JSON_TYPE, AbortSignal.timeout(this.options.writeTimeoutMs))
      .then(
        () => group.forEach((entry) => entry.resolve()),
        (error: unknown) => group.forEach((entry) => entry.reject(error)),
      )
      .finally(() => {
        this.writing = undefined;
        this.writeWaiting();
      });
  }

  /** One pass, if this replica holds the lease; resolves with what it did (nothing without the lease). */
  sweep(): Promise<SweepCount> {
    this.sweeping ??= this.pass().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async pass(): Promise<SweepCount> {
    const count: SweepCount = { orphans: 0, expired: 0, checked: 0 };
    if (!(await this.lease())) return count;
    const retentions = await this.retentions();
    if (await this.indexOutdated(retentions)) await this.rescan(retentions);
    const now = Date.now();
    for await (const { key } of this.options.store.list(DUE)) {
      const due = parseDue(key);
      if (!due) continue;
      if (Number(due[1]) > now) break;
      for (const id of await this.idsOf(key, due[2]!)) {
        count.checked++;
        await this.check(id, retentions, count);
      }
      await this.options.store.delete(key);
    }
    if (count.orphans || count.expired) this.options.log.info(count, 'storage sweep');
    return count;
  }

  /** Takes or renews the lease; false while another replica holds it. */
  private async lease(): Promise<boolean> {
    const { store } = this.options;
    const until = Date.now() + Math.max(3 * this.options.intervalMs, 10_000);
    const body = JSON.stringify({ holder: this.holder, until });
    const current = await store.get(LEASE);
    if (!current) return (await store.putIfAbsent(LEASE, body, JSON_TYPE)) !== undefined;
    const lease = JSON.parse(current.bytes.toString('utf8')) as { holder: string; until: number };
    if (lease.holder !== this.holder && lease.until > Date.now()) return false;
    return (await store.putIfMatch(LEASE, body, JSON_TYPE, current.etag)) !== undefined;
  }

  private async retentions(): Promise<Retentions> {
    const tenants = Object.fromEntries(await this.options.tenants.retentions());
    return { default_days: this.options.retentionDays, tenants };
  }

  /** No index state yet, or a retention shorter than the one the index was written for. */
  private async indexOutdated(retentions: Retentions): Promise<boolean> {
    const stored = await this.options.store.get(STATE);
    if (!stored) return true;
    const indexed = JSON.parse(stored.bytes.toString('utf8')) as Retentions;
    const daysOf = (r: Retentions, tenant: string) => r.tenants[tenant] ?? r.default_days;
    const tenants = new Set([...Object.keys(indexed.tenants), ...Object.keys(retentions.tenants)]);
    return retentions.default_days < indexed.default_days || [...tenants].some((t) => daysOf(retentions, t) < daysOf(indexed, t));
  }

  /**
   * Every job once: each gets an entry for its check, now for a job with a record, a grace
   * period after its input for one without (its intake may still be running); then the state
   * is saved. The checks themselves run in this pass or later ones.
   */
  private async rescan(retentions: Retentions): Promise<void> {
    const { store, log, graceMs } = this.options;
    const started = Date.now();
    let jobs = 0;
    let group: { id: string; input?: Date; record: boolean } | undefined;
    const index = async () => {
      if (!group) return;
      jobs++;
      const due = group.record || !group.input ? started : group.input.getTime() + graceMs;
      await store.put(dueKey(due, group.id), ENTRY, JSON_TYPE);
    };
    for await (const { key, lastModified } of store.list(JOBS_PREFIX)) {
      const object = jobObjectOf(key);
      if (!object) continue;
      if (group?.id !== object.id) {
        await index();
        group = { id: object.id, record: false };
      }
      if (object.kind === 'input') group.input = lastModified;
      if (object.kind === 'record') group.record = true;
    }
    await index();
    await store.put(STATE, JSON.stringify(retentions), JSON_TYPE);
    log.info({ jobs, ms: Date.now() - started }, 'storage sweep: every job indexed for its next check');
  }

  /** The jobs an entry names: one in its key, or a group's in its body. */
  private async idsOf(key: string, name: string): Promise<string[]> {
    if (!name.startsWith(GROUP)) return [name];
    const stored = await this.options.store.get(key);
    return stored ? (JSON.parse(stored.bytes.toString('utf8')) as { ids: string[] }).ids : [];
  }

  /** What the record says to do with the job now. */
  private async check(id: string, retentions: Retentions, count: SweepCount): Promise<void> {
    const { store, records, graceMs } = this.options;
    const record = await records.get(id);
    if (!record) {
      await Promise.all([store.delete(jobKeys(id).input), store.delete(jobKeys(id).webhooks)]);
      count.orphans++;
      return;
    }
    if (record.status === 'expired') return;
    if (!lifecycle.isTerminal(record)) {
      await store.put(dueKey(Date.now() + graceMs, id), ENTRY, JSON_TYPE);
      return;
    }
    const due = this.expiresAt(record, retentions);
    if (due > Date.now()) {
      await store.put(dueKey(due, id), ENTRY, JSON_TYPE);
      return;
    }
    await this.expire(record);
    count.expired++;
  }

  private expiresAt(record: JobRecord, retentions: Retentions): number {
    const days = (record.tenant && retentions.tenants[record.tenant]) || retentions.default_days;
    return Date.parse(record.created_at) + days * DAY_MS;
  }

  private async expire(record: JobRecord): Promise<void> {
    const { store, claims, records } = this.options;
    const keys = jobKeys(record.id);
    // The record last: should this pass stop half-way, its entry is still there for the next one.
    await Promise.all([store.delete(keys.input), store.delete(keys.output), store.delete(keys.webhooks), store.delete(keys.preview), removeFromList(store, record)]);
    if (record.idempotency) await claims.release(record.idempotency.key_hash, AbortSignal.timeout(10_000));
    await records.apply(record.id, (r) => lifecycle.expire(r));
  }
}
