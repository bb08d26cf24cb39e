// A job's run on a runner, local or remote: the request handed over and the one outcome it gets.
import type { JobParams } from '../common/jobs.js';
import type { ResultFrame } from '../common/protocol.js';
import type { Priority } from '../common/topics.js';

export interface JobCallbacks {
  onStarted?(batchSize: number): void;
  onProgress?(step: number, total: number): void;
  /** A preview of the job's latents after `step` (a small WebP), when it asked for them. */
  onPreview?(step: number, total: number, image: Buffer): void;
}

export type RunnerOutcome =
  | { ok: true; image: Buffer; result: ResultFrame }
  | {
      ok: false;
      code: string;
      retryable: boolean;
      message: string;
      /** The runner died or hung while it held other jobs too: this one may not be the cause. */
      shared?: boolean;
    };

/** One job handed to a runner: what it runs, how it is scheduled, who hears of it. */
export interface RunRequest {
  id: string;
  params: JobParams;
  image: Uint8Array;
  /** The job's priority: the runner starts higher ones first, and lets them overtake a running batch. */
  priority?: Priority;
  /** The input's pixels: the stall bound grows with them. */
  pixels?: number;
  /** Run with no other job in the runner, and let none join until it ends: a suspect of a crash. */
  solo?: boolean;
  callbacks?: JobCallbacks;
}
