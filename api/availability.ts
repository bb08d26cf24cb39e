// Which models can take jobs: what the consumers found when they checked each model's source at
// start (common/sources.ts). Read from the object store, cached for two seconds and shared
// between concurrent requests; a model no consumer has checked yet counts as available.
import { readModelStatus, type ModelStatus } from '../common/sources.js';
import type { ObjectStore } from '../common/storage.js';
import { ModelUnavailable } from './errors.js';

export class ModelAvailability {
  private cached: { at: number; value: Promise<Map<string, ModelStatus | undefined>> } | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly models: readonly string[],
    private readonly ttlMs = 2000,
  ) {}

  /** Each model's last status; a status that cannot be read in time is unknown, and does not hold jobs back. */
  get(): Promise<Map<string, ModelStatus | undefined>> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.ttlMs) return this.cached.value;
    const value = Promise.all(this.models.map(async (model) => [model, await readModelStatus(this.store, model, AbortSignal.timeout(this.ttlMs)).catch(() => undefined)] as const)).then(
      (entries) => new Map(entries),
    );
    this.cached = { at: now, value };
    return value;
  }

  /** Throws ModelUnavailable (503) when the model's consumer found its source unusable. */
  async check(model: string): Promise<void> {
    const status = (await this.get()).get(model);
    if (status && !status.available) throw new ModelUnavailable(model, status.reason ?? 'its source cannot be served');
  }
}
