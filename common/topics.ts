// Topic names: img2img.<model>.<priority>, img2img.<model>.dlq, img2img.events and img2img.cancels.
export const PRIORITIES = ['high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];

export const jobTopic = (prefix: string, model: string, priority: Priority) => `${prefix}.${model}.${priority}`;
export const dlqTopic = (prefix: string, model: string) => `${prefix}.${model}.dlq`;
export const eventsTopic = (prefix: string) => `${prefix}.events`;
/** Cancel requests keyed by job id: consumers follow them without parsing every progress event. */
export const cancelsTopic = (prefix: string) => `${prefix}.cancels`;

/** Settings of topics that differ from the broker's defaults. */
export function topicSettings(topic: string): { name: string; value: string }[] {
  // A cancel only matters while its job runs: compacted per job, and gone after a day.
  if (topic.endsWith('.cancels')) return [{ name: 'cleanup.policy', value: 'compact,delete' }, { name: 'retention.ms', value: '86400000' }];
  return [];
}

/** Every topic the system needs for these models. */
export function allTopics(prefix: string, models: readonly string[]): string[] {
  const perModel = models.flatMap((model) => [...PRIORITIES.map((p) => jobTopic(prefix, model, p)), dlqTopic(prefix, model)]);
  return [...perModel, eventsTopic(prefix), cancelsTopic(prefix)];
}

/** The consumer group that serves a model; its lag is the model's queue depth. */
export const consumerGroup = (prefix: string, model: string) => `${prefix}-${model}`;
