// Removes inputs that no job record will ever own: an API process that died between storing
// an input and creating its record leaves one behind. The listing is in key order, so the
// objects of one job (input.png, job.json, output.png) arrive together; an input without a
// record, older than the grace period (far beyond any intake's deadline), is an orphan.
import type { Logger } from '../common/logger.js';
import type { ObjectStore } from '../common/storage.js';

export interface SweeperOptions {
  store: ObjectStore;
  log: Logger;
  /** Time between passes (0: never). */
  intervalMs: number;
  /** An input younger than this may belong to a job still being created. */
  graceMs: number;
}

const jobOf = (key: string) => /^jobs\/([^/]+)\/([^/]+)$/.exec(key);

export class OrphanSweeper {
  private timer: NodeJS.Timeout | undefined;
  private sweeping: Promise<number> | undefined;

  constructor(private readonly options: SweeperOptions) {}

  start(): void {
    if (!this.options.intervalMs) return;
    this.timer = setInterval(() => void this.sweep().catch((error: unknown) => this.options.log.warn({ err: error }, 'orphan sweep failed')), this.options.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One pass; resolves with how many orphans it removed. */
  sweep(): Promise<number> {
    this.sweeping ??= this.pass().finally(() => (this.sweeping = undefined));
    return this.sweeping;
  }

  private async pass(): Promise<number> {
    const { store, log, graceMs } = this.options;
    const cutoff = Date.now() - graceMs;
    let removed = 0;
    let current: { id: string; input?: Date; record: boolean } | undefined;
    const settle = async () => {
      if (!current?.input || current.record || current.input.getTime() > cutoff) return;
      await store.delete(`jobs/${current.id}/input.png`);
      removed++;
    };
    for await (const { key, lastModified } of store.list('jobs/')) {
      const match = jobOf(key);
      if (!match) continue;
      const [, id, name] = match;
      if (!current || current.id !== id) {
        await settle();
        current = { id: id!, record: false };
      }
      if (name === 'input.png') current.input = lastModified;
      if (name === 'job.json') current.record = true;
    }
    await settle();
    if (removed) log.info({ removed }, 'removed inputs that no job owns');
    return removed;
  }
}
