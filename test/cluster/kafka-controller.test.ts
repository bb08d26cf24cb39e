// SIGKILL the KRaft controller leader (a combined broker and controller node) under a
// steady load of submissions, then start it again. The two other voters elect a leader; every
// 202 job succeeds once; refusals meanwhile are 503s with Retry-After.
import { afterAll, beforeAll, describe, it } from 'vitest';
import { controllerLeader, nodes, partitions } from './cluster.js';
import { expectExactlyOnce, secondsUntil, startSystem, topicsInUse, underLoad, type System } from './scenario.js';

let system: System;

beforeAll(async () => {
  system = await startSystem();
}, 240_000);
afterAll(async () => {
  await system?.stop();
});

describe('replicated Kafka, the controller leader killed under load', () => {
  it('elects a new controller, accepts again, and runs every accepted job exactly once', async () => {
    let victim = 0;
    const result = await underLoad(system, {
      name: 'Kafka: SIGKILL of the KRaft controller leader',
      inject: async ({ admin }) => {
        const { leader, epoch } = controllerLeader();
        victim = leader;
        const led = (await partitions(admin, topicsInUse(system))).filter((p) => p.leader === victim).length;
        const at = nodes.kill(`kafka-${victim}`);
        const elected = await secondsUntil(() => {
          const now = controllerLeader(victim);
          return now.epoch > epoch && now.leader !== victim;
        }, at);
        const moved = await secondsUntil(async () => (await partitions(admin, topicsInUse(system))).every((p) => p.leader !== victim), at);
        return { victim: `kafka-${victim}`, partitions_it_led: led, new_controller_elected_s: elected, new_controller: `kafka-${controllerLeader(victim).leader}`, leaders_moved_s: moved };
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
