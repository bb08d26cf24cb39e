// The batch client: sends every image of a folder to the API, prints an access link for each,
// and with --wait saves the results. Usage: npm run batch -- --help; docs/BATCH.md.
// Exit status: 0 all went well, 1 a file was refused or its job failed, 2 a bad command line
// or an unreadable folder.
import { CommanderError } from 'commander';
import { parseOptions, program, UsageError } from './batch/options.js';
import { runBatch, type Io } from './batch/run.js';

export async function main(argv: readonly string[], io: Io): Promise<number> {
  const command = program().configureOutput({
    writeOut: (text) => io.stdout.write(text),
    writeErr: (text) => io.stderr.write(text),
  });
  try {
    const summary = await runBatch(parseOptions(command, argv), io);
    return summary.failed + summary.refused > 0 ? 1 : 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2; // commander already printed it
    if (error instanceof UsageError) {
      io.stderr.write(`batch: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

process.exitCode = await main(process.argv.slice(2), { fetch, stdout: process.stdout, stderr: process.stderr });
