// Queue depth per model and priority: the consumer group's lag, summed over partitions.
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

export class QueueDepth {
  private cached: { at: number; value: Promise<Map<string, ModelDepth>> } | undefined;

  constructor(
    private readonly admin: Admin,
    private readonly topicPrefix: string,
    private readonly models: readonly string[],
    private readonly ttlMs = 1000,
  ) {}

  /** Depth of every model; a failed lookup is not cached, so the next request tries again. */
  get(): Promise<Map<string, ModelDepth>> {
    const now = Date.now();
    if (this.cached && now - this.cached.at < this.ttlMs) return this.cached.value;
    const value = this.fetchAll();
    this.cached = { at: now, value };
    value.catch(() => {
      if (this.cached?.value === value) this.cached = undefined;
    });
    return value;
  }

  private async fetchAll(): Promise<Map<string, ModelDepth>> {
    const depths = await Promise.all(this.models.map(async (model) => [model, await this.fetchModel(model)] as const));
    return new Map(depths);
  }

  private async fetchModel(model: string): Promise<ModelDepth> {
    const topics = PRIORITIES.map((priority) => jobTopic(this.topicPrefix, model, priority));
    const [committed, ...offsets] = await Promise.all([
      this.admin.fetchOffsets({ groupId: consumerGroup(this.topicPrefix, model), topics }),
      ...topics.map((topic) => this.admin.fetchTopicOffsets(topic)),
    ]);
    const depth = { total: 0 } as ModelDepth;
    PRIORITIES.forEach((priority, i) => {
      const topicCommits = committed.find((entry) => entry.topic === topics[i])?.partitions ?? [];
      depth[priority] = lag(offsets[i] as PartitionOffsets[], topicCommits);
      depth.total += depth[priority];
    });
    return depth;
  }
}
