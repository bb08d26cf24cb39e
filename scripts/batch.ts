// The batch client: sends every image of a folder to the API, prints an access link for each,
// and with --wait saves the results. Usage: npm run batch -- --help; docs/BATCH.md.
// Exit status: 0 all went well, 1 a file was refused or its job failed, 2 the batch could not
// start (a bad command line, an unreadable folder, an API that does not answer or does not
// serve the model), 130 stopped by Ctrl-C (143 by SIGTERM).
import { constants } from 'node:os';
import { CommanderError } from 'commander';
import { oneLineErrors } from '../common/cli.js';
import { parseOptions, program, UsageError } from './batch/options.js';
import { runBatch, StartError, type Io } from './batch/run.js';

export async function main(argv: readonly string[], io: Io): Promise<number> {
  const command = program().configureOutput({
    writeOut: (text) => io.stdout.write(text),
    writeErr: (text) => io.stderr.write(text),
    ...oneLineErrors('batch'),
  });
  try {
    const summary = await runBatch(parseOptions(command, argv), io);
    if (summary.interrupted) return 128 + (constants.signals[io.signal?.reason as NodeJS.Signals] ?? constants.signals.SIGINT);
    return summary.failed + summary.refused > 0 ? 1 : 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2; // commander already printed it
    if (error instanceof UsageError || error instanceof StartError) {
      io.stderr.write(`batch: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

/** What the progress bar turns off while it draws: the cursor and line wrap. */
const RESTORE_TERMINAL = '\x1b[?25h\x1b[?7h';

// The first Ctrl-C (or SIGTERM) stops the batch: the bar gives the terminal back, and the summary
// says what was done and what remains. A second one does not wait for that.
const stop = new AbortController();
const onSignal = (signal: NodeJS.Signals) => {
  if (!stop.signal.aborted) return stop.abort(signal);
  if (process.stderr.isTTY) process.stderr.write(RESTORE_TERMINAL);
  process.exit(128 + constants.signals[signal]);
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

process.exitCode = await main(process.argv.slice(2), { fetch, stdout: process.stdout, stderr: process.stderr, signal: stop.signal });
