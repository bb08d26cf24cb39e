// Topic names: img2img.<model>.<priority>, img2img.<model>.dlq, img2img.events, img2img.cancels and
// img2img.webhooks.retry.<n>.
export const PRIORITIES = ['high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];

export const jobTopic = (prefix: string, model: string, priority: Priority) => `${prefix}.${model}.${priority}`;
export const dlqTopic = (prefix: string, model: string) => `${prefix}.${model}.dlq`;
export const eventsTopic = (prefix: string) => `${prefix}.events`;
/** The Kafka header of an event message that holds its type (the value holds it too). */
export const EVENT_TYPE_HEADER = 'event-type';
/**
 * The Kafka header of an event message whose job has no webhook (value NO_WEBHOOK): the webhook
 * dispatcher skips it unread instead of reading the job's record. Without it, nothing is said.
 */
export const WEBHOOK_HEADER = 'webhook';
export const NO_WEBHOOK = 'none';
/** Cancel requests keyed by job id: consumers follow them without parsing every progress event. */
export const cancelsTopic = (prefix: string) => `${prefix}.cancels`;
/** Webhook retries wait their turn in one topic per level: level n holds deliveries whose n-th attempt failed. */
export const WEBHOOK_RETRY_LEVELS = 8;
export const webhookRetryTopic = (prefix: string, level: number) => `${prefix}.webhooks.retry.${level}`;
/** The webhook dispatcher's own topics; it creates them (the API and consumers need none of them). */
export const webhookRetryTopics = (prefix: string) =>
  Array.from({ length: WEBHOOK_RETRY_LEVELS }, (_, index) => webhookRetryTopic(prefix, index + 1));

/** Settings of topics that differ from the broker's defaults. */
export function topicSettings(topic: string): { name: string; value: string }[] {
  // A cancel only matters while its job runs: compacted per job, and gone after a day.
  if (topic.endsWith('.cancels')) return [{ name: 'cleanup.policy', value: 'compact,delete' }, { name: 'retention.ms', value: '86400000' }];
  // A retry waits up to a day in its topic: keep three, whatever the broker's default.
  if (/\.webhooks\.retry\.\d+$/.test(topic)) return [{ name: 'retention.ms', value: String(3 * 86_400_000) }];
  return [];
}

/** Every topic the API and the consumers need for these models. */
export function allTopics(prefix: string, models: readonly string[]): string[] {
  const perModel = models.flatMap((model) => [...PRIORITIES.map((p) => jobTopic(prefix, model, p)), dlqTopic(prefix, model)]);
  return [...perModel, eventsTopic(prefix), cancelsTopic(prefix)];
}

/** The consumer group that serves a model; its lag is the model's queue depth. */
export const consumerGroup = (prefix: string, model: string) => `${prefix}-${model}`;
