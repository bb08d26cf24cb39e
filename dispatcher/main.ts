// Composition root of the webhook dispatcher: reads the config, runs createDispatcher, and stops
// it on SIGTERM. Run as many as you like: they share the <prefix>-webhooks consumer group.
//   npm run dispatcher
import { Command } from 'commander';
import { parseCommandLine } from '../common/cli.js';
import { DispatcherConfigSchema, loadConfig } from '../common/config.js';
import { runMain, stopOnSignals } from '../common/signals.js';
import { createLogger } from '../common/logger.js';
import { createDispatcher } from './dispatcher.js';

async function main(): Promise<void> {
  parseCommandLine(new Command('dispatcher').description('Sends the signed webhooks of finished jobs; settings come from the environment (.env.example).'));
  const config = loadConfig(process.env, DispatcherConfigSchema);
  const logger = createLogger('dispatcher', config.LOG_LEVEL);
  if (!config.PUBLIC_BASE_URL) logger.warn(`PUBLIC_BASE_URL is unset: links in webhook bodies name http://127.0.0.1:${config.API_PORT}`);
  const dispatcher = createDispatcher(config, { logger });
  await dispatcher.start();

  stopOnSignals(logger, 'stopping', () => dispatcher.stop());
}

runMain(main);
