// One fault under load, the same steps for every node the suite kills: the API and a consumer
// against the clusters, a steady load of submissions, SIGKILL of a node chosen while the load
// runs, the node started again, then the accounting.
import { writeFileSync } from 'node:fs';
import { expect } from 'vitest';
import { Partitioners, type Admin, type Kafka } from 'kafkajs';
import type { JobEvent, JobRecord } from '../../common/jobs.js';
import { createKafka, ensureTopics } from '../../common/kafka.js';
import { allTopics, eventsTopic, jobTopic } from '../../common/topics.js';
import { startTestApi, type TestApi } from '../helpers/api.js';
import { ConsumerProcess, waitForStatus } from '../helpers/consumer.js';
import { testConfig, uniqueName } from '../helpers/env.js';
import { report, sleep } from '../helpers/faults.js';
import { STATE_DIR, kafkaBrokers, minioEndpoint, topicsOnEveryBroker } from './cluster.js';
import { acceptance, round, settle, servedAgain, startGaps, steadyLoad, type Outcome, type Submission } from './load.js';
import { json, postJob } from '../helpers/api.js';
import { pngOf } from '../helpers/consumer.js';

/**
 * Submissions a second. The fault comes FAULT_AT_S in, the restart RESTART_AFTER_S after it, and
 * the load goes on for TAIL_S once the node is back (MAX_S bounds it all).
 */
export const LOAD = { rate: 3, maxSeconds: 90 };
const FAULT_AT_S = 8;
const RESTART_AFTER_S = 15;
const TAIL_S = 6;

export interface System {
  api: TestApi;
  consumer: ConsumerProcess;
  admin: Admin;
  events: EventLog;
  stop(): Promise<void>;
}

export interface EventLog {
  /** Each message of the events topic once, in the order read. */
  events: JobEvent[];
  /** Messages read again by the test's own follower (it rejoins after a fault): not duplicates in the topic. */
  readAgain(): number;
  stop(): Promise<void>;
}

/**
 * The events topic as the test's follower reads it, each message once by its partition and
 * offset. A consumer that restarts during a fault reads again what it had not committed; counting
 * those would report duplicates that the topic does not hold. Two messages with the same event
 * at different offsets are real duplicates and are kept.
 */
async function followEventsOnce(kafka: Kafka, prefix: string): Promise<EventLog> {
  const seen = new Set<string>();
  const events: JobEvent[] = [];
  let again = 0;
  const consumer = kafka.consumer({ groupId: uniqueName('cluster-events'), maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic: eventsTopic(prefix), fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ partition, message }) => {
      const where = `${partition}:${message.offset}`;
      if (seen.has(where)) return void again++;
      seen.add(where);
      events.push(JSON.parse(String(message.value)) as JobEvent);
    },
  });
  return { events, readAgain: () => again, stop: () => consumer.disconnect() };
}

/** The API (on MinIO server 1) and one consumer process (on MinIO server 2), every broker as bootstrap. */
export async function startSystem(): Promise<System> {
  // The topics first, known to every broker, then the processes that subscribe to them.
  const overrides = { KAFKA_BROKERS: kafkaBrokers, S3_ENDPOINT: minioEndpoint(1), TOPIC_PARTITIONS: '3', TOPIC_PREFIX: uniqueName('topics') };
  const config = testConfig(overrides);
  const kafka = createKafka(config, uniqueName('cluster-admin'));
  const admin0 = kafka.admin();
  await admin0.connect();
  await ensureTopics(admin0, allTopics(config.TOPIC_PREFIX, ['tiny']), config.TOPIC_PARTITIONS);
  await admin0.disconnect();
  await topicsOnEveryBroker(allTopics(config.TOPIC_PREFIX, ['tiny']));
  const api = await startTestApi(overrides);
  const consumer = await new ConsumerProcess({
    TOPIC_PREFIX: api.config.TOPIC_PREFIX,
    KAFKA_BROKERS: kafkaBrokers,
    S3_ENDPOINT: minioEndpoint(2),
    IDLE_UNLOAD_MS: '0',
  }).start();
  await consumer.ready(120_000);
  const admin = api.services.admin;
  const events = await followEventsOnce(createKafka(api.config, uniqueName('cluster')), api.config.TOPIC_PREFIX);
  // The runner is loaded and every partition has carried a job before the clock starts.
  const warm: string[] = [];
  for (let seed = 0; seed < 6; seed++) {
    const response = await postJob(api.url, { image: await pngOf(64, 64, seed), query: { model_name: 'tiny', prompt: 'warm', seed: String(seed) } });
    expect(response.status).toBe(202);
    warm.push((await json(response)).id as string);
  }
  try {
    for (const id of warm) await waitForStatus(api.services.records, id, ['succeeded'], 120_000);
  } catch (error) {
    const records = await Promise.all(warm.map((id) => api.services.records.get(id).catch(() => undefined)));
    throw new Error(`warm-up: ${String(error)}; records: ${records.map((r) => `${r?.id} ${r?.status} ${r?.error?.code ?? ''}`).join(', ')}\nconsumer log:\n${consumer.log.slice(-4000)}`);
  }
  return {
    api,
    consumer,
    admin,
    events,
    stop: async () => {
      await events.stop().catch(() => {});
      await consumer.stop('SIGKILL');
      // Kept beside the nodes' logs (the next run's setup clears them).
      writeFileSync(`${STATE_DIR}/logs/consumer-${api.config.TOPIC_PREFIX}.log`, consumer.log);
      await api.close();
    },
  };
}

export interface Fault {
  name: string;
  /** Picks the victim and kills it; returns what to report about it. */
  inject(system: System): Promise<Record<string, string | number>>;
  /** Starts the victim again; returns what to report about it. */
  restore(system: System): Promise<Record<string, string | number>>;
}

export interface Result {
  outcome: Outcome;
  submissions: Submission[];
  figures: Record<string, string | number>;
}

/** The load, the fault at FAULT_AT_S, the restart RESTART_AFTER_S later, then the count (printed). */
export async function underLoad(system: System, fault: Fault): Promise<Result> {
  const started = Date.now();
  const load = await steadyLoad(system.api, LOAD.rate, LOAD.maxSeconds);
  await sleep(FAULT_AT_S * 1000);
  const faultAt = Date.now();
  const injected = await fault.inject(system);
  await sleep(Math.max(0, faultAt + RESTART_AFTER_S * 1000 - Date.now()));
  const restored = await fault.restore(system);
  await sleep(TAIL_S * 1000);
  load.stop();
  const submissions = await load.done;
  const outcome = await settle(system.api, submissions, system.events);

  const { config } = system.api;
  const accepted = outcome.records.filter((r): r is JobRecord => r !== undefined);
  const partitionOf = new Map(accepted.map((r) => [r.id, partitionFor(r.id, config.TOPIC_PARTITIONS)]));
  const { refused_for_s, slowest_answer_s } = acceptance(submissions, faultAt);
  const gaps = startGaps(accepted, started, faultAt);
  const { served_again_s, longest_wait_s, longest_wait_before_s } = servedAgain(accepted, partitionOf, faultAt);
  const figures = {
    ...outcome.figures,
    ...injected,
    ...restored,
    refused_for_s,
    slowest_answer_s,
    every_partition_served_again_s: served_again_s,
    longest_queue_wait_before_fault_s: longest_wait_before_s,
    longest_queue_wait_after_fault_s: longest_wait_s,
    longest_time_without_a_start_before_fault_s: gaps.before_s,
    longest_time_without_a_start_after_fault_s: gaps.after_s,
    seconds_to_recover: served_again_s,
    reruns: accepted.filter((r) => (r.attempts ?? 1) > 1).length,
    events_read_again_by_the_test: system.events.readAgain(),
    test_s: round((Date.now() - started) / 1000),
  };
  report(fault.name, outcome.count, figures);
  // A job announced twice: its endings as they arrived (same `at`: one publish sent twice; different: two writes).
  for (const record of accepted) {
    const endings = system.events.events.filter((e) => e.id === record.id && ['succeeded', 'failed', 'canceled'].includes(e.type));
    if (endings.length > 1) console.log(`[fault] ${fault.name}: ${record.id} announced ${endings.length} times: ${JSON.stringify(endings.map((e) => ({ type: e.type, at: e.at, attempt: e.attempt })))} (fault at ${new Date(faultAt).toISOString()})`);
  }
  return { outcome, submissions, figures };
}

/** What every fault must keep: each 202 job succeeded once with its output; refusals are 503s with Retry-After. */
export function expectExactlyOnce({ outcome }: Result): void {
  expect(outcome.unexpected.map((s) => `#${s.seq}: ${s.status}`)).toEqual([]);
  expect(outcome.bare503).toBe(0);
  expect(outcome.notSucceeded.map((r) => `${r.id}: ${r.status} ${r.error?.code ?? ''}`)).toEqual([]);
  expect(outcome.missingOutputs).toEqual([]);
  expect(outcome.count).toMatchObject({ succeeded: outcome.count.accepted, lost: 0, duplicated: 0 });
  expect(outcome.count.accepted).toBeGreaterThan(0);
}

/** The partition the API's producer picked for a job (kafkajs' default partitioner: murmur2 of the key, as Java's). */
const partitioner = Partitioners.DefaultPartitioner();
const partitionFor = (id: string, partitions: number) =>
  partitioner({ topic: '', partitionMetadata: Array.from({ length: partitions }, (_, partitionId) => ({ partitionId, leader: 0, partitionErrorCode: 0, replicas: [0], isr: [0] })), message: { key: id, value: null } });

/** The topics whose partitions the load uses: the model's normal-priority jobs and the events. */
export const topicsInUse = (system: System) => [jobTopic(system.api.config.TOPIC_PREFIX, 'tiny', 'normal'), eventsTopic(system.api.config.TOPIC_PREFIX)];

/** Polls `probe` every 100 ms until it holds; the seconds it took from `since` (bounded). */
export async function secondsUntil(probe: () => Promise<boolean> | boolean, since: number, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  // A probe that throws (no leader recorded yet, a broker that does not answer) has not held.
  while (!(await (async () => probe())().catch(() => false))) {
    if (Date.now() > deadline) return NaN;
    await sleep(100);
  }
  return round((Date.now() - since) / 1000);
}
