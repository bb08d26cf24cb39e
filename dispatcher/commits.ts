// The dispatcher's progress, committed at most once an interval. kafkajs, left to commit by
// itself, commits after every batch, and the dispatcher's batches are small: 1.2-1.8 commit
// requests a job at saturation (bench/NOTES.md). What a crash or a rebalance leaves uncommitted
// is read again, and the courier skips what it did already (the job's delivery log says so).
import type { Consumer } from 'kafkajs';
import type { Logger } from '../common/logger.js';

interface Next {
  topic: string;
  partition: number;
  /** The offset the partition's next read starts at. */
  offset: string;
}

export class ThrottledCommits {
  private readonly pending = new Map<string, Next>();
  /** Each partition's progress, committed or not: what the backlog metric counts from. */
  private readonly progress = new Map<string, Next>();
  private readonly timer: NodeJS.Timeout;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly consumer: Pick<Consumer, 'commitOffsets'>,
    intervalMs: number,
    private readonly logger: Pick<Logger, 'debug'>,
  ) {
    this.timer = setInterval(() => void this.flush(), intervalMs);
    this.timer.unref();
  }

  /** The message at `offset` and those before it on its partition are done. */
  done(topic: string, partition: number, offset: string): void {
    const next = { topic, partition, offset: (BigInt(offset) + 1n).toString() };
    this.pending.set(`${topic}:${partition}`, next);
    this.progress.set(`${topic}:${partition}`, next);
  }

  /** Where the partition's next read starts, as far as this member knows (its commit may still be on its way). */
  nextOffset(topic: string, partition: number): string | undefined {
    return this.progress.get(`${topic}:${partition}`)?.offset;
  }

  /** After a rebalance, what is pending may be another member's partitions: it is read again instead. */
  forget(): void {
    this.pending.clear();
    this.progress.clear();
  }

  /** Commits what is pending, after any commit still on its way (so a partition's offsets never go back). */
  flush(): Promise<void> {
    if (this.pending.size) {
      const offsets = [...this.pending.values()];
      this.pending.clear();
      this.chain = this.chain
        .then(() => this.consumer.commitOffsets(offsets))
        .catch((error: unknown) => this.logger.debug({ err: error }, 'offset commit failed; its messages are read again'));
    }
    return this.chain;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}
