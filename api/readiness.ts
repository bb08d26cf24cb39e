// What GET /readyz asks, as a function: Kafka, object storage and (with API keys) Redis, each
// 'ok' or why not, never slower than the deadline. The route answers with it and the metric
// img2img_dependency_up samples it at every scrape, so an alert sees what the probe sees.
import type { Admin } from 'kafkajs';
import type { ApiConfig } from '../common/config.js';
import { race } from '../common/deadline.js';
import type { ObjectStore } from '../common/storage.js';
import type { Limits } from './limits.js';

export interface DependencyStates {
  kafka: string;
  storage: string;
  /** Redis, behind the limits; absent without API keys (nothing is limited then). */
  limits?: string;
}

/** 'ok', or why not; never slower than the deadline. */
async function probe(work: (signal: AbortSignal) => Promise<unknown>, timeoutMs: number): Promise<string> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    await race(work(signal), signal);
    return 'ok';
  } catch (error) {
    return `unreachable: ${(error as Error).message || (error as Error).name}`.slice(0, 200);
  }
}

export function dependencyCheck(deps: { admin: Admin; store: ObjectStore; limits: Pick<Limits, 'ping'>; config: ApiConfig; withKeys: boolean }): () => Promise<DependencyStates> {
  const timeoutMs = Math.min(deps.config.DEPENDENCY_TIMEOUT_MS, 2000);
  const kafka = () => deps.admin.connect().then(() => deps.admin.describeCluster());
  const storage = (signal: AbortSignal) => deps.store.ping(signal);
  return async () => {
    const [kafkaState, storageState, limitsState] = await Promise.all([
      probe(kafka, timeoutMs),
      probe(storage, timeoutMs),
      deps.withKeys ? probe(() => deps.limits.ping(), timeoutMs) : undefined,
    ]);
    return { kafka: kafkaState, storage: storageState, ...(limitsState ? { limits: limitsState } : {}) };
  };
}
