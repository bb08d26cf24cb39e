// Composition root of the webhook dispatcher: reads the config, runs createDispatcher, and stops
// it on SIGTERM. Run as many as you like: they share the <prefix>-webhooks consumer group.
//   npm run dispatcher
import { ConfigError, DispatcherConfigSchema, loadConfig } from '../common/config.js';
import { createLogger } from '../common/logger.js';
import { createDispatcher } from './dispatcher.js';

async function main(): Promise<void> {
  const config = loadConfig(process.env, DispatcherConfigSchema);
  const logger = createLogger('dispatcher', config.LOG_LEVEL);
  if (!config.PUBLIC_BASE_URL) logger.warn(`PUBLIC_BASE_URL is unset: links in webhook bodies name http://127.0.0.1:${config.API_PORT}`);
  const dispatcher = createDispatcher(config, { logger });
  await dispatcher.start();

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    dispatcher.stop().then(
      () => process.exit(0),
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
