import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Brings Kafka and MinIO up when they are not running (idempotent).
          globalSetup: ['test/integration/infra.setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          // Each file owns its topics and key prefixes, but the 2-core machine runs files one by one.
          fileParallelism: false,
        },
      },
      {
        // Faults (servers stopped, paused, processes killed): run on their own, after the rest.
        test: {
          name: 'fault',
          include: ['test/fault/**/*.test.ts'],
          globalSetup: ['test/integration/infra.setup.ts'],
          testTimeout: 300_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        // Beyond one machine (scripts/test-cluster, its own CI step): a 3-node Kafka and a 4-server
        // MinIO on ports and a state folder of their own, nodes killed under load; the Helm chart.
        test: {
          name: 'cluster',
          include: ['test/cluster/**/*.test.ts'],
          globalSetup: ['test/cluster/setup.ts'],
          testTimeout: 420_000,
          hookTimeout: 240_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
