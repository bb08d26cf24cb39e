// Queue depth per model and priority: the consumer group's lag, summed over partitions.
// The offsets it is counted from are also what queue positions are counted from (position.ts).
// Cached for a second and shared between concurrent requests, so the route stays cheap.
import type { Admin } from 'kafkajs';
import { consumerGroup, jobTopic, PRIORITIES, type Priority } from './topics.js';

export interface PartitionOffsets {
  partition: number;
  /** The high watermark: the offset the next message will get. */
  high: string;
  low: string;
}

export interface CommittedOffset {
  partition: number;
  /** '-1' when the group never committed on this partition. */
  offset: string;
}

/** Messages not yet consumed: high watermark minus the committed offset, or minus the low watermark without a commit. */
export function lag(partitions: PartitionOffsets[], committed: CommittedOffset[]): number {
  const commits = new Map(committed.map((c) => [c.partition, Number(c.offset)]));
  return partitions.reduce((sum, { partition, high, low }) => {
    const commit = commits.get(partition) ?? -1;
    const from = commit >= 0 ? Math.max(commit, Number(low)) : Number(low);
    return sum + Math.max(0, Number(high) - from);
  }, 0);
}

export type ModelDepth = Record<Priority, number> & { total: number };

/** One priority's topic of a model: its partitions' watermarks and the consumer group's commits. */
export interface TopicOffsets {
  topic: string;
  partitions: PartitionOffsets[];
  committed: CommittedOffset[];
}
export type ModelOffsets = Record<Priority, TopicOffsets>;

export function depthOf(offsets: ModelOffsets): ModelDepth {
  const depth = { total: 0 } as ModelDepth;
  for (const priority of PRIORITIES) {
    depth[priority] = lag(offsets[priority].partitions, offsets[priority].committed);
    depth.total += depth[priority];
  }
  return depth;
}

export class QueueDepth {
  private cached: { at: number; value: Promise<Map<string, ModelOffsets>> } | undefined;

  constructor(
    private readonly admin: Admin,
    private readonly topicPrefix: string,
    private readonly models: readonly string[],
    private readonly ttlMs = 1000,
  ) {}

  /** Depth of every model; a failed lookup is not cached, so the next request tries again. */
  async get(): Promise<Map<string, ModelDepth>> {
    const offsets = await this.offsets();
    return new Map([...offsets].map(([model, topics]) => [model, depthOf(topics)]));
  }

  /** The offsets the depth is counted from (queue positions count from them too), under the same cache. */
  offsets(): Promise<Map<string, ModelOffsets>> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.ttlMs) return this.cached.value;
    const value = this.fetchAll();
    this.cached = { at: now, value };
    value.catch(() => {
      if (this.cached?.value === value) this.cached = undefined;
    });
    return value;
  }

  private async fetchAll(): Promise<Map<string, ModelOffsets>> {
    const all = await Promise.all(this.models.map(async (model) => [model, await this.fetchModel(model)] as const));
    return new Map(all);
  }

  private async fetchModel(model: string): Promise<ModelOffsets> {
    const topics = PRIORITIES.map((priority) => jobTopic(this.topicPrefix, model, priority));
    const [committed, ...offsets] = await Promise.all([
      this.admin.fetchOffsets({ groupId: consumerGroup(this.topicPrefix, model), topics }),
      ...topics.map((topic) => this.admin.fetchTopicOffsets(topic)),
    ]);
    const byPriority = {} as ModelOffsets;
    PRIORITIES.forEach((priority, i) => {
      const topic = topics[i]!;
      byPriority[priority] = { topic, partitions: offsets[i] as PartitionOffsets[], committed: committed.find((entry) => entry.topic === topic)?.partitions ?? [] };
    });
    return byPriority;
  }
}
