// A queued job's position: how many of its model's jobs run before it, counted from Kafka
// offsets and the consumer group's commits (never by reading records). Ahead of a job are the
// uncommitted messages of the model's higher priorities, the messages before its own on its
// partition, and on its topic's other partitions those produced before it (found by timestamp:
// the API stamps each job message with the job's acceptance time). Commits trail the jobs that
// run, so the running jobs before it count too: position 0 means nothing is ahead of it.
import type { Admin } from 'kafkajs';
import type { CommittedOffset, ModelOffsets, PartitionOffsets, QueueDepth } from './depth.js';
import { lag } from './depth.js';
import type { JobRecord, QueuePlace } from './jobs.js';
import { PRIORITIES, type Priority } from './topics.js';

/** The first offset on each partition whose timestamp is at or after the job's acceptance (the high watermark when none). */
export type OffsetsAt = { partition: number; offset: string }[];

/** Where each partition's unconsumed messages begin: the commit, or the low watermark without one (or below it). */
function consumedUpTo(partitions: PartitionOffsets[], committed: CommittedOffset[]): Map<number, bigint> {
  const commits = new Map(committed.map((c) => [c.partition, BigInt(c.offset)]));
  return new Map(
    partitions.map(({ partition, low }) => {
      const commit = commits.get(partition) ?? -1n;
      const from = BigInt(low);
      return [partition, commit >= 0n && commit > from ? commit : from];
    }),
  );
}

/** Messages that run before the job at `place` (its priority `priority`), from one reading of its model's offsets. */
export function positionOf(place: QueuePlace, priority: Priority, offsets: ModelOffsets, before: OffsetsAt): number {
  const rank = PRIORITIES.indexOf(priority);
  const higher = PRIORITIES.slice(0, rank).reduce((sum, p) => sum + lag(offsets[p].partitions, offsets[p].committed), 0);
  const own = offsets[priority];
  const from = consumedUpTo(own.partitions, own.committed);
  const ahead = (partition: number, offset: string) => {
    const start = from.get(partition);
    return start === undefined ? 0n : BigInt(offset) > start ? BigInt(offset) - start : 0n;
  };
  let same = ahead(place.partition, place.offset);
  for (const { partition, offset } of before) if (partition !== place.partition) same += ahead(partition, offset);
  return higher + Number(same);
}

/** How long after a job's acceptance a message stamped earlier may still reach its topic, unless told (the API: twice its intake's deadline). */
const SETTLE_MS = 10_000;

interface Lookup {
  /** When it was asked. */
  time: number;
  /** Asked SETTLE_MS or more after the timestamp: no message stamped before it can arrive any more, so its answer stays true. */
  settled: boolean;
  value: Promise<OffsetsAt>;
}

export class QueuePositions {
  /** Offsets by timestamp, by `topic@time`, in the order of their last use. */
  private readonly at = new Map<string, Lookup>();

  constructor(
    private readonly admin: Pick<Admin, 'fetchTopicOffsetsByTimestamp'>,
    private readonly depth: Pick<QueueDepth, 'offsets'>,
    private readonly ttlMs = 1000,
    private readonly options: { settleMs?: number; limit?: number } = {},
  ) {}

  /** The job's position while it is queued; undefined for a job in any other state or without a place in Kafka. */
  async of(record: JobRecord): Promise<number | undefined> {
    const place = record.queue;
    if (record.status !== 'queued' || !place) return undefined;
    const model = (await this.depth.offsets()).get(record.model_name);
    if (!model) return undefined;
    const several = model[record.priority].partitions.length > 1;
    const before = several ? await this.offsetsAt(place.topic, Date.parse(record.created_at)) : [];
    return positionOf(place, record.priority, model, before);
  }

  /**
   * The offsets by timestamp of a topic with several partitions. A recent job's are asked again
   * after ttlMs (a message accepted a moment earlier may still be on its way to the broker); an
   * older job's are asked once and kept, so each stream that follows a long queue costs Kafka
   * nothing after its job's first seconds.
   */
  private offsetsAt(topic: string, time: number): Promise<OffsetsAt> {
    const key = `${topic}@${time}`;
    const now = Date.now();
    const cached = this.at.get(key);
    if (cached && (cached.settled || now - cached.time < this.ttlMs)) {
      this.at.delete(key); // kept as the most recently used
      this.at.set(key, cached);
      return cached.value;
    }
    this.at.delete(key);
    this.prune(now);
    const value = this.admin.fetchTopicOffsetsByTimestamp(topic, time);
    const lookup = { time: now, settled: now - time >= (this.options.settleMs ?? SETTLE_MS), value };
    this.at.set(key, lookup);
    value.catch(() => {
      if (this.at.get(key) === lookup) this.at.delete(key);
    });
    return value;
  }

  /** At the limit, the expired lookups go, then the least recently used down to nine tenths of it. */
  private prune(now: number): void {
    const limit = this.options.limit ?? 10_000;
    if (this.at.size < limit) return;
    for (const [key, lookup] of this.at) if (!lookup.settled && now - lookup.time >= this.ttlMs) this.at.delete(key);
    for (const key of this.at.keys()) {
      if (this.at.size < limit * 0.9) break;
      this.at.delete(key);
    }
  }

  /** How many lookups are kept (for tests). */
  get size(): number {
    return this.at.size;
  }
}
