/**
 * The `mor` command. Argument parsing only: every subcommand calls into the library.
 */
import { Command, CommanderError } from 'commander';
import { MorError } from '../errors.js';
import { getBackend, setBackend } from '../backend/index.js';
import type { BackendName } from '../backend/backend.js';
import { VERSION } from '../index.js';

function chooseBackend(name: string | undefined): void {
  if (name === undefined) return;
  if (name !== 'ref' && name !== 'native') {
    throw new MorError('E_ARGUMENT', `--backend '${name}': expected 'ref' or 'native'`);
  }
  setBackend(name as BackendName);
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('mor')
    .description('Mixture-of-Recursions language models: train, convert and serve recursive transformers with adaptive depth')
    .version(VERSION)
    .option('--backend <name>', "kernel backend: 'native' (C++ addon, default when built) or 'ref' (TypeScript)")
    .showHelpAfterError()
    .exitOverride();

  program
    .command('info')
    .description('print the kernel backend, GEMM provider, thread count and SIMD level')
    .option('--json', 'print one JSON object')
    .action((opts: { json?: boolean }) => {
      chooseBackend(program.opts<{ backend?: string }>().backend);
      const info = getBackend().info();
      if (opts.json) {
        console.log(JSON.stringify({ version: VERSION, ...info }));
        return;
      }
      console.log(`mor ${VERSION}`);
      console.log(`backend        ${info.backend}`);
      console.log(`gemm provider  ${info.gemmProvider} (available: ${info.gemmProviders.join(', ')})`);
      console.log(`threads        ${info.threads}`);
      console.log(`simd           ${info.simd}`);
    });

  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv as string[]);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version exit through here with code 0; usage errors were already printed.
      return e.exitCode;
    }
    if (e instanceof MorError) {
      console.error(`mor: ${e.message}`);
      return 2;
    }
    throw e;
  }
}
