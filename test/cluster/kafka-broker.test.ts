// SIGKILL the broker that leads the partitions in use, under a steady load of
// submissions, then start it again. Every 202 job succeeds once; refusals meanwhile are 503s
// with Retry-After; the time to recover is printed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busiestLeader, controllerLeader, nodes, partitions } from './cluster.js';
import { expectExactlyOnce, secondsUntil, startSystem, topicsInUse, underLoad, type System } from './scenario.js';

let system: System;

beforeAll(async () => {
  system = await startSystem();
}, 240_000);
afterAll(async () => {
  await system?.stop();
});

describe('replicated Kafka, a broker killed under load', () => {
  it('creates the topics with three replicas and min.insync.replicas 2', async () => {
    const topics = topicsInUse(system);
    for (const p of await partitions(system.admin, topics)) expect(p.isr.length, `${p.topic}/${p.partition}`).toBe(3);
    const { resources } = await system.admin.describeConfigs({ resources: topics.map((name) => ({ type: 2, name, configNames: ['min.insync.replicas'] })), includeSynonyms: false });
    for (const resource of resources) expect(resource.configEntries[0]?.configValue, resource.resourceName).toBe('2');
  });

  it('fails the partitions over, accepts again, and runs every accepted job exactly once', async () => {
    let victim = 0;
    const result = await underLoad(system, {
      name: 'Kafka: SIGKILL of the broker leading the partitions in use',
      inject: async ({ admin }) => {
        const before = await partitions(admin, topicsInUse(system));
        // Not the controller leader: that fault is the next file's.
        victim = busiestLeader(before, controllerLeader().leader);
        const led = before.filter((p) => p.leader === victim).length;
        const at = nodes.kill(`kafka-${victim}`);
        const moved = await secondsUntil(async () => (await partitions(admin, topicsInUse(system))).every((p) => p.leader !== victim), at);
        return { victim: `kafka-${victim}`, partitions_it_led: led, leaders_moved_s: moved };
      },
      restore: async ({ admin }) => {
        const restart_s = await nodes.start(`kafka-${victim}`);
        const since = Date.now();
        const back = await secondsUntil(async () => (await partitions(admin, topicsInUse(system))).every((p) => p.isr.includes(victim)), since);
        return { restart_s: Math.round(restart_s * 10) / 10, back_in_every_isr_s: back };
      },
    });
    expectExactlyOnce(result);
  }, 420_000);
});
