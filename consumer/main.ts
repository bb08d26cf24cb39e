// Composition root of a consumer process: reads the config and the model list, runs
// createConsumer, and stops it on SIGTERM.
//   npm run consumer -- [--models tiny,other]
import { Command } from 'commander';
import { parseCommandLine } from '../common/cli.js';
import { ConsumerConfigSchema, loadConfig } from '../common/config.js';
import { runMain, stopOnSignals } from '../common/signals.js';
import { createLogger } from '../common/logger.js';
import { readModelNames } from '../common/models.js';
import { createConsumer } from './consumer.js';

async function main(): Promise<void> {
  const args = parseCommandLine<{ models?: string }>(
    new Command('consumer')
      .description('Consumes the queues of the models of MODEL_NAMES_FILE and runs their jobs; settings come from the environment (.env.example).')
      .option('-m, --models <names>', 'comma-separated models to serve (default: every model of MODEL_NAMES_FILE)'),
  );
  const config = loadConfig(process.env, ConsumerConfigSchema);
  const logger = createLogger('consumer', config.LOG_LEVEL);
  const listed = await readModelNames(config.MODEL_NAMES_FILE);
  const wanted = args.models?.split(',').map((name) => name.trim()) ?? listed.map((entry) => entry.name);
  const unknown = wanted.filter((name) => !listed.some((entry) => entry.name === name));
  if (unknown.length) {
    logger.fatal(`--models names ${unknown.join(', ')}, not in ${config.MODEL_NAMES_FILE} (${listed.map((e) => e.name).join(', ')})`);
    process.exit(2);
  }
  const models = listed.filter((entry) => wanted.includes(entry.name));
  const consumer = createConsumer(config, { models, listed, logger });
  await consumer.start();

  stopOnSignals(logger, 'stopping: finishing in-flight jobs', async () => {
    await consumer.stop();
    logger.info('stopped');
  });
}

runMain(main);
