// The end of every process' composition root: stop cleanly on SIGTERM or SIGINT (once), and
// exit non-zero with the reason when start-up fails.
import { ConfigError } from './config.js';
import type { Logger } from './logger.js';

/** On the first SIGTERM or SIGINT: log `stopping`, run `stop`, exit 0 (1 if it failed). */
export function stopOnSignals(logger: Logger, stopping: string, stop: () => Promise<void>): void {
  let stopped = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopped) return;
    stopped = true;
    logger.info({ signal }, stopping);
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'unclean shutdown');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

/** The exit code of a process that refused its configuration (sysexits' EX_CONFIG): starting it again would not help. */
export const EXIT_CONFIG = 78;

/** Runs a composition root; a bad variable names itself (exit EXIT_CONFIG), anything else is printed with its cause (exit 1). */
export function runMain(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    const config = error instanceof ConfigError;
    console.error(config ? error.message : error);
    process.exit(config ? EXIT_CONFIG : 1);
  });
}
