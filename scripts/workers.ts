// Worker tokens: create (the token is printed once), list, revoke. Tokens live in the object
// store, so a gateway refuses a revoked one within seconds and drops its connection.
//   npm run workers -- create --name gpu-box-1
//   npm run workers -- list
//   npm run workers -- revoke <worker id>
import { existsSync } from 'node:fs';
import { oneLineErrors } from '../common/cli.js';
import { Command } from 'commander';
import { ConfigError, KeysConfigSchema, loadConfig } from '../common/config.js';
import { ObjectStore } from '../common/storage.js';
import { WorkerStore, type WorkerToken } from '../common/workers.js';

async function workerStore(): Promise<WorkerStore> {
  if (existsSync('.env')) process.loadEnvFile('.env'); // what is already set wins
  const store = new ObjectStore(loadConfig(process.env, KeysConfigSchema));
  await store.ensureBucket();
  return new WorkerStore(store);
}

const describe = (worker: WorkerToken) =>
  [
    worker.id,
    worker.name,
    `${worker.strikes.length} strikes`,
    worker.evicted ? `EVICTED ${worker.evicted.at} (${worker.evicted.reason}; unverified: ${worker.evicted.unverified_jobs.join(',') || 'none'})` : '',
    worker.revoked_at ? `REVOKED ${worker.revoked_at}` : `created ${worker.created_at}`,
  ].filter(Boolean).join('\t');

export function program(): Command {
  const command = new Command('workers').description('tokens of remote GPU workers').configureOutput(oneLineErrors('workers')).exitOverride();
  command
    .command('create')
    .description('create a worker token; it is shown once')
    .requiredOption('--name <name>', 'what the worker is, e.g. gpu-box-1')
    .action(async (options: { name: string }) => {
      const { worker, token } = await (await workerStore()).create(options.name);
      console.log(describe(worker));
      console.log(`\n${token}\n\nKeep it now: only its hash is stored. On the GPU machine:`);
      console.log(`  IMG2IMG_WORKER_TOKEN=${token} python -m img2img_runner --model <model> --connect wss://<host>/api/workers/connect`);
    });
  command
    .command('list')
    .description('every worker token, revoked and evicted ones included (never their secrets)')
    .action(async () => {
      for (const worker of await (await workerStore()).list()) console.log(describe(worker));
    });
  command
    .command('revoke <id>')
    .description('revoke a worker token; its gateway drops the connection within seconds')
    .action(async (id: string) => {
      if (!(await (await workerStore()).revoke(id))) {
        console.error(`workers: no worker with id ${id}`);
        process.exitCode = 1;
        return;
      }
      console.log(`revoked ${id}`);
    });
  return command;
}

try {
  await program().parseAsync(process.argv);
} catch (error) {
  if ((error as { code?: string }).code?.startsWith('commander.')) process.exitCode = (error as { exitCode?: number }).exitCode || 0 ? 2 : 0;
  else {
    console.error(error instanceof ConfigError ? `workers: ${error.message}` : error);
    process.exitCode = 1;
  }
}
