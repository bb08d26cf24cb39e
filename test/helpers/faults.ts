// Tools of the fault suite: stop, start, pause and resume the real servers that scripts/infra
// runs (by their pid files, so nothing else is ever signalled), follow a job's events, and
// the count every fault test ends with.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Kafka } from 'kafkajs';
import type { Config } from '../../common/config.js';
import { isEnding, type JobEvent, type JobRecord } from '../../common/jobs.js';
import { eventsTopic } from '../../common/topics.js';
import { uniqueName } from './env.js';

type Server = 'kafka' | 'minio' | 'redis';

const pidOf = (server: Server) => Number(readFileSync(`.infra/run/${server}.pid`, 'utf8').trim());

export const servers = {
  /** SIGSTOP: the server hangs, its connections stay open (a frozen machine, a long GC pause). */
  pause: (server: Server) => process.kill(pidOf(server), 'SIGSTOP'),
  resume: (server: Server) => process.kill(pidOf(server), 'SIGCONT'),
  /** The server is gone: connections are refused until start(). */
  stop: (server: Server) => execFileSync('bash', ['scripts/infra', 'down', server], { stdio: 'ignore' }),
  start: (server: Server) => execFileSync('bash', ['scripts/infra', 'up', server], { stdio: 'ignore' }),
};

/** Every event of the test's topic, as it arrives (from the beginning); stop() when done. */
export async function followEvents(kafka: Kafka, config: Config) {
  const events: JobEvent[] = [];
  const consumer = kafka.consumer({ groupId: uniqueName('fault-events'), maxWaitTimeInMs: 200 });
  await consumer.connect();
  await consumer.subscribe({ topic: eventsTopic(config.TOPIC_PREFIX), fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => void events.push(JSON.parse(String(message.value)) as JobEvent) });
  return {
    events,
    of: (id: string, type?: JobEvent['type']) => events.filter((e) => e.id === id && (!type || e.type === type)),
    stop: () => consumer.disconnect(),
  };
}

export interface Count {
  submitted: number;
  accepted: number;
  succeeded: number;
  failed?: number;
  canceled?: number;
  aborted?: number;
  lost: number;
  duplicated: number;
}

/** The line every fault test ends with; `lost` is an accepted job with no ending, `duplicated` one announced twice. */
export function countOf(submitted: number, records: (JobRecord | undefined)[], events: JobEvent[]): Count {
  const accepted = records.length;
  const ended = (status: string) => records.filter((r) => r?.status === status).length;
  const endings = (id: string) => events.filter((e) => e.id === id && isEnding(e.type)).length;
  return {
    submitted,
    accepted,
    succeeded: ended('succeeded'),
    failed: ended('failed'),
    canceled: ended('canceled'),
    aborted: ended('aborted'),
    lost: records.filter((r) => !r || !isEnding(r.status)).length,
    duplicated: records.filter((r) => r && endings(r.id) > 1).length,
  };
}

export function report(name: string, count: Count, figures: Record<string, string | number> = {}): void {
  console.log(`[fault] ${name}: ${JSON.stringify({ ...count, ...figures })}`);
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
