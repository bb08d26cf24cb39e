// One model's feed: reads img2img.<model>.{high,normal,low}, keeps strict
// priority, hands jobs to the runner and commits an offset only once its job is
// finished for good (see docs/ARCHITECTURE.md, "Priorities and offsets").
import type { Consumer, EachMessagePayload, Kafka } from 'kafkajs';
import { isEnding, JobMessage, parseValue } from '../common/jobs.js';
import { consumerGroup, dlqTopic, jobTopic, PRIORITIES, type Priority } from '../common/topics.js';
import { PriorityBuffers } from './buffers.js';
import { endedLine, JobRun, type Received, type JobDeps } from './job.js';
import { OffsetTracker } from './offsets.js';
import type { Throughput } from './throughput.js';

/** Above this many waiting messages a priority's topic is paused, so memory stays bounded. */
const BUFFER_HIGH_WATER = 256;
/** How many of the latest cancel requests are remembered: a job among them reads its record before it runs. */
const CANCELS_REMEMBERED = 10_000;

export interface FeedDeps extends Omit<JobDeps, 'dlq'> {
  kafka: Kafka;
}

export class ModelFeed {
  private readonly consumer: Consumer;
  private readonly buffers = new PriorityBuffers<Received>();
  private readonly offsets = new OffsetTracker();
  private readonly active = new Map<string, JobRun>();
  private readonly paused = new Set<Priority>();
  /** Ids of the latest cancel requests, oldest first: their messages may still be on their way. */
  private readonly cancelRequested = new Set<string>();
  private commitChain: Promise<void> = Promise.resolve();
  private idleTimer: NodeJS.Timeout | undefined;
  private stopping = false;
  readonly name: string;

  constructor(private readonly deps: FeedDeps) {
    this.name = deps.model.name;
    // Remote workers join and leave: more room means waiting jobs can go now.
    deps.pool.onChange(() => this.pump());
    this.consumer = deps.kafka.consumer({
      groupId: consumerGroup(deps.config.TOPIC_PREFIX, this.name),
      // Work is decoupled from the fetch loop, so heartbeats flow during long jobs and
      // these timeouts only have to cover a dead process, not a slow job.
      sessionTimeout: deps.config.KAFKA_SESSION_TIMEOUT_MS,
      heartbeatInterval: Math.max(500, Math.floor(deps.config.KAFKA_SESSION_TIMEOUT_MS / 5)),
      rebalanceTimeout: 60_000,
      maxWaitTimeInMs: 250,
      allowAutoTopicCreation: false,
    });
  }

  private topic(priority: Priority): string {
    return jobTopic(this.deps.config.TOPIC_PREFIX, this.name, priority);
  }

  async start(): Promise<void> {
    const { consumer } = this;
    consumer.on(consumer.events.GROUP_JOIN, () => this.onRebalance());
    await consumer.connect();
    await consumer.subscribe({ topics: PRIORITIES.map((p) => this.topic(p)), fromBeginning: true });
    await consumer.run({ autoCommit: false, eachMessage: (payload) => this.receive(payload) });
    // Load the model now so the first job does not pay for it; a failure shows again on that job.
    this.deps.pool.warm().then(
      () => this.armIdleTimer(),
      (error: unknown) => this.deps.logger.error({ err: error }, 'runner failed to start'),
    );
  }

  /** Stops fetching, lets the runner finish what it holds, commits, disconnects. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true;
    clearTimeout(this.idleTimer);
    await this.consumer.stop();
    this.buffers.clear(); // never started: their offsets stay uncommitted and are redelivered
    const deadline = Date.now() + graceMs;
    while (this.active.size && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    await this.deps.pool.stop(Math.max(1000, deadline - Date.now()));
    await this.commit();
    await this.consumer.disconnect();
  }

  /** A cancel request from the cancels topic. */
  cancel(id: string): void {
    this.cancelRequested.add(id);
    if (this.cancelRequested.size > CANCELS_REMEMBERED) this.cancelRequested.delete(this.cancelRequested.values().next().value!);
    const queued = this.buffers.remove((received) => received.message?.id === id);
    for (const received of queued) void this.process(received); // the run sees the canceled record and skips
    this.active.get(id)?.cancel();
  }

  private async receive({ topic, partition, message }: EachMessagePayload): Promise<void> {
    const priority = PRIORITIES.find((p) => this.topic(p) === topic)!;
    this.offsets.begin(topic, partition, message.offset);
    const parsed = parseValue(JobMessage, message.value);
    const received: Received = {
      topic, partition, offset: message.offset, priority, raw: message.value, attempt: 0,
      message: parsed.success ? parsed.data : undefined,
      problem: parsed.success ? undefined : parsed.problem,
    };
    this.buffers.push(priority, received);
    if (this.buffers.size(priority) >= BUFFER_HIGH_WATER && !this.paused.has(priority)) {
      this.paused.add(priority);
      this.consumer.pause([{ topic }]);
    }
    this.pump();
  }

  /** Hands waiting jobs over while the runner has room: one batch computing, one queued behind it. */
  private pump(): void {
    clearTimeout(this.idleTimer);
    for (let next = this.buffers.nextPriority(); next && !this.stopping && this.hasRoom(next); next = this.buffers.nextPriority()) {
      const received = this.buffers.take()!;
      this.resumeIfDrained(received.priority);
      void this.process(received);
    }
    this.armIdleTimer();
  }

  /**
   * Room in the runner for a job of this priority: within its capacity, or, for a job that
   * outranks one handed over already, up to twice it (the runner starts it first, or lets it
   * overtake, so it must not wait here behind a runner full of lower ones).
   */
  private hasRoom(priority: Priority): boolean {
    const { capacity } = this.deps.pool;
    if (this.active.size < capacity) return true;
    const rank = PRIORITIES.indexOf(priority);
    return this.active.size < 2 * capacity && [...this.active.values()].some((run) => PRIORITIES.indexOf(run.received.priority) > rank);
  }

  private resumeIfDrained(priority: Priority): void {
    if (this.paused.has(priority) && this.buffers.size(priority) < BUFFER_HIGH_WATER / 2) {
      this.paused.delete(priority);
      this.consumer.resume([{ topic: this.topic(priority) }]);
    }
  }

  private async process(received: Received): Promise<void> {
    const running = received.message && this.active.get(received.message.id);
    if (running) {
      // Redelivered (after a rebalance, or a retry that crossed one) while this feed still runs
      // the job: never run it twice at once; the offset is finished with the run.
      running.redeliveries.push(received);
      return;
    }
    if (received.message && this.cancelRequested.has(received.message.id)) received = { ...received, cancelRequested: true };
    const run = new JobRun(received, { ...this.deps, dlq: dlqTopic(this.deps.config.TOPIC_PREFIX, this.name) });
    if (received.message) this.active.set(received.message.id, run);
    this.deps.throughput?.began();
    let returned: Omit<Parameters<Throughput['returned']>[0], 'started'> = { ended: false };
    try {
      const verdict = await run.execute();
      if (verdict.kind === 'retry' && !this.stopping) {
        this.deps.metrics?.retried?.(this.name);
        setTimeout(() => {
          const { resumeAttempt, suspect } = verdict;
          const again = { ...received, attempt: received.attempt + 1, redeliveries: run.redeliveries, resumeAttempt };
          this.buffers.push(received.priority, { ...again, suspect: received.suspect || suspect });
          this.pump();
        }, verdict.delayMs).unref();
      } else if (verdict.kind === 'done') {
        const runSeconds = verdict.status === 'succeeded' ? verdict.record?.timings?.run_s : undefined;
        returned = { ended: isEnding(verdict.status), runSeconds };
        for (const d of [received, ...run.redeliveries]) this.offsets.finish(d.topic, d.partition, d.offset);
        if (verdict.deadLettered) this.deps.metrics?.deadLettered?.(this.name);
        const ended = endedLine(verdict);
        if (ended) this.deps.logger.info(ended, 'job ended');
        this.deps.metrics?.finished?.(this.name, received.priority, verdict.status, verdict.record);
        void this.commit();
      }
    } finally {
      this.deps.throughput?.returned({ ...returned, started: run.reachedStart });
      if (received.message && this.active.get(received.message.id) === run) this.active.delete(received.message.id);
      this.pump();
    }
  }

  /** Commits serially: commitOffsets calls must not overtake each other. */
  private commit(): Promise<void> {
    this.commitChain = this.commitChain.then(async () => {
      const offsets = this.offsets.takeCommittable();
      if (!offsets.length) return;
      try {
        await this.consumer.commitOffsets(offsets);
      } catch (error) {
        // Lost during a rebalance: the messages are redelivered and skipped as finished.
        this.deps.logger.warn({ err: error, model: this.name }, 'offset commit failed');
      }
    });
    return this.commitChain;
  }

  /** The group starts again from committed offsets: forget what was only buffered. */
  private onRebalance(): void {
    this.buffers.clear();
    this.offsets.reset();
    for (const run of this.active.values()) {
      for (const d of [run.received, ...run.redeliveries]) this.offsets.begin(d.topic, d.partition, d.offset);
    }
    if (this.paused.size) {
      this.consumer.resume([...this.paused].map((p) => ({ topic: this.topic(p) })));
      this.paused.clear();
    }
  }

  private armIdleTimer(): void {
    const idleMs = this.deps.config.IDLE_UNLOAD_MS;
    clearTimeout(this.idleTimer);
    if (!idleMs || this.stopping || this.active.size || this.buffers.size() || !this.deps.pool.running) return;
    this.idleTimer = setTimeout(() => {
      if (this.active.size || this.buffers.size()) return;
      this.deps.logger.info({ model: this.name, idle_ms: idleMs }, 'idle: stopping the runner to free its memory');
      this.deps.metrics?.idleUnloaded?.(this.name);
      void this.deps.pool.stop(30_000, { standby: true });
    }, idleMs).unref();
  }
}
