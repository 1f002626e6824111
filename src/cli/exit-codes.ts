/**
 * The exit codes of `mor`, one per kind of outcome:
 *
 *   0    success (also --help and --version)
 *   1    the command failed: unreadable or corrupt files, bad data, an internal error
 *   2    usage error: unknown flag, bad flag value, unknown preset or invalid config, a path
 *        given that does not exist, a setting refused (e.g. on --resume, or a reused --out), a
 *        model that cannot be exported in the format asked for
 *   130  interrupted by Ctrl-C (training saves a checkpoint first)
 */
import { CommanderError } from 'commander';
import { MorError } from '../errors.js';
import { CheckpointNotFoundError } from '../train/checkpoint.js';
import { CorpusPathNotFoundError } from '../data/corpus.js';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

/** The exit codes as `mor --help` prints them. */
export const EXIT_CODES_HELP = `
Exit codes:
  ${EXIT_OK}    success
  ${EXIT_FAILURE}    the command failed (unreadable or corrupt files, bad data, internal error)
  ${EXIT_USAGE}    usage error (unknown flag, bad value, unknown preset, missing path, refused setting)
  ${EXIT_INTERRUPTED}  interrupted by Ctrl-C (training saves a checkpoint first)`;

/** Thrown by a command that ends with a code of its own (Ctrl-C during training). */
export class CommandExit extends Error {
  constructor(readonly exitCode: number, message: string) {
    super(message);
    this.name = 'CommandExit';
  }
}

/** Errors that mean "the command line was wrong", not "the work failed". */
function isUsageError(e: MorError): boolean {
  return e.code === 'E_ARGUMENT' || e.code === 'E_CONFIG' || e.code === 'E_EXPORT' || e instanceof CheckpointNotFoundError || e instanceof CorpusPathNotFoundError;
}

/** The exit code for an error a command threw; prints what the user needs to see. */
export function exitCodeFor(e: unknown, print: (line: string) => void): number {
  // commander printed its own message (usage errors) or the help / version text (exit code 0)
  if (e instanceof CommanderError) return e.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (e instanceof CommandExit) return e.exitCode;
  if (e instanceof MorError) {
    print(`mor: ${e.message}`);
    return isUsageError(e) ? EXIT_USAGE : EXIT_FAILURE;
  }
  print(`mor: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  return EXIT_FAILURE;
}
