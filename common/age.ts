// The age of each model's oldest queued job, by priority: how long ago the first message not yet
// consumed was accepted (the API stamps each job message with its acceptance time). Kafka gives
// no message's timestamp without reading it, but it answers, for a time t, each partition's first
// offset stamped at or after t: an unconsumed message stamped before t exists exactly when that
// offset lies past where consumption stands. The age is found by searching t, on a log scale:
// at most 17 lookups per topic that has a queue, none for an empty one.
import type { ModelOffsets, QueueDepth, TopicOffsets } from './depth.js';
import type { OffsetsAt } from './position.js';
import { PRIORITIES, type Priority } from './topics.js';

/** Kafka's offsets-by-timestamp lookup (kafkajs' admin.fetchTopicOffsetsByTimestamp): `time` in whole milliseconds. */
export type OffsetsAtTime = (topic: string, time: number) => Promise<OffsetsAt>;

/** Ages beyond this read as this (a month: far past any deadline). */
const MAX_AGE_S = 30 * 86_400;
/** Bisection steps after the bracket: the answer is within 4^(1/32), 4.4 %, below the true age. */
const REFINE_STEPS = 5;

/** Where each partition's unconsumed messages begin: the commit, or the low watermark without one (or below it). */
function consumedUpTo({ partitions, committed }: TopicOffsets): Map<number, bigint> {
  const commits = new Map(committed.map((c) => [c.partition, BigInt(c.offset)]));
  return new Map(partitions.map(({ partition, low }) => [partition, [commits.get(partition) ?? -1n, BigInt(low)].reduce((a, b) => (a > b ? a : b))]));
}

/** Seconds since the oldest unconsumed message of `topic` was stamped (a lower bound within 4.4 %); 0 when nothing waits. */
export async function oldestAge(offsets: TopicOffsets, offsetsAt: OffsetsAtTime, now = Date.now()): Promise<number> {
  const from = consumedUpTo(offsets);
  if (!offsets.partitions.some(({ partition, high }) => BigInt(high) > from.get(partition)!)) return 0;
  // Some unconsumed message is older than `age` seconds.
  const olderThan = async (age: number) => (await offsetsAt(offsets.topic, Math.round(now - age * 1000))).some(({ partition, offset }) => BigInt(offset) > (from.get(partition) ?? BigInt(offset)));
  if (!(await olderThan(1))) return 0;
  let low = 1; // older than low, not older than high
  let high = 4;
  while (await olderThan(high)) {
    if (high >= MAX_AGE_S) return MAX_AGE_S;
    [low, high] = [high, Math.min(high * 4, MAX_AGE_S)];
  }
  for (let step = 0; step < REFINE_STEPS; step++) {
    const middle = Math.sqrt(low * high);
    if (await olderThan(middle)) low = middle;
    else high = middle;
  }
  return Math.round(low);
}

export type ModelAges = Record<Priority, number>;

/** The oldest queued job's age of every model and priority, from the depth's offsets; cached like them, for `ttlMs`. */
export class QueueAge {
  private cached: { at: number; value: Promise<Map<string, ModelAges>> } | undefined;

  constructor(
    private readonly depth: Pick<QueueDepth, 'offsets'>,
    private readonly offsetsAt: OffsetsAtTime,
    private readonly ttlMs = 10_000,
  ) {}

  get(): Promise<Map<string, ModelAges>> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.ttlMs) return this.cached.value;
    const value = this.depth.offsets().then((all) => Promise.all([...all].map(async ([model, offsets]) => [model, await this.ages(offsets, now)] as const))).then((entries) => new Map(entries));
    this.cached = { at: now, value };
    value.catch(() => {
      if (this.cached?.value === value) this.cached = undefined;
    });
    return value;
  }

  private async ages(offsets: ModelOffsets, now: number): Promise<ModelAges> {
    const ages = await Promise.all(PRIORITIES.map((priority) => oldestAge(offsets[priority], this.offsetsAt, now)));
    return Object.fromEntries(PRIORITIES.map((priority, i) => [priority, ages[i]!])) as ModelAges;
  }
}
