/**
 * Flag parsers and the log line writer shared by the `mor` subcommands.
 */
import { InvalidArgumentError } from 'commander';

/** An integer flag ≥ min; a bad value is a commander usage error naming the flag. */
export function int(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer ≥ ${min}, got '${v}'`);
    return n;
  };
}

/** A finite number flag ≥ min. */
export function num(name: string, min = 0) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new InvalidArgumentError(`${name} must be a number ≥ ${min}, got '${v}'`);
    return n;
  };
}

/** A repeatable flag's values, in order. */
export function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

/** Progress and log lines go to stderr, so stdout holds only results. */
export const log = (s: string): void => {
  process.stderr.write(`${s}\n`);
};
