// Composition root of a consumer process: reads the config and the model list, runs
// createConsumer, and stops it on SIGTERM.
//   npm run consumer -- [--models tiny,other]
import { parseArgs } from 'node:util';
import { ConfigError, ConsumerConfigSchema, loadConfig } from '../common/config.js';
import { createLogger } from '../common/logger.js';
import { readModelNames } from '../common/models.js';
import { createConsumer } from './consumer.js';

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: { models: { type: 'string', short: 'm' }, help: { type: 'boolean', short: 'h' } },
  });
  if (args.help) {
    console.log('usage: npm run consumer -- [--models a,b]   (default: every model of MODEL_NAMES_FILE)');
    return;
  }
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

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping: finishing in-flight jobs');
    consumer.stop().then(
      () => {
        logger.info('stopped');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((error: unknown) => {
  console.error(error instanceof ConfigError ? error.message : error);
  process.exit(1);
});
