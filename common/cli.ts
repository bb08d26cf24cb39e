// The command lines of the project's processes, read with commander: --help prints the usage
// and exits 0; an unknown flag, a missing value or a bad one is one line on stderr and exit
// status 2 (a usage error), never a stack trace.
import type { Command, OutputConfiguration } from 'commander';

/** The exit status of a command line that cannot run: a usage error. */
export const EXIT_USAGE = 2;

/**
 * commander's error output as one line that names the program and where the usage is:
 * `consumer: unknown option '--bogus' (consumer --help lists the options)`.
 */
export function oneLineErrors(name: string): Pick<OutputConfiguration, 'outputError'> {
  return {
    outputError: (text, write) => {
      const message = text
        .replace(/^error: /, '')
        .split('\n')
        .map((line) => line.trim())
        .filter(Boolean)
        .join(' ');
      write(`${name}: ${message} (${name} --help lists the options)\n`);
    },
  };
}

/**
 * Parses `argv` (as process.argv: node and the script first) and returns the options; on
 * --help or a usage error commander has printed what to say, and the process exits.
 */
export function parseCommandLine<T extends object>(command: Command, argv: readonly string[] = process.argv): T {
  command
    .configureOutput(oneLineErrors(command.name()))
    .exitOverride((error) => process.exit(error.exitCode === 0 ? 0 : EXIT_USAGE))
    .parse(argv);
  return command.opts<T>();
}
