// Topic names: img2img.<model>.<priority>, img2img.<model>.dlq and img2img.events.
export const PRIORITIES = ['high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];

export const jobTopic = (prefix: string, model: string, priority: Priority) => `${prefix}.${model}.${priority}`;
export const dlqTopic = (prefix: string, model: string) => `${prefix}.${model}.dlq`;
export const eventsTopic = (prefix: string) => `${prefix}.events`;

/** Every topic the system needs for these models. */
export function allTopics(prefix: string, models: readonly string[]): string[] {
  const perModel = models.flatMap((model) => [...PRIORITIES.map((p) => jobTopic(prefix, model, p)), dlqTopic(prefix, model)]);
  return [...perModel, eventsTopic(prefix)];
}

/** The consumer group that serves a model; its lag is the model's queue depth. */
export const consumerGroup = (prefix: string, model: string) => `${prefix}-${model}`;
