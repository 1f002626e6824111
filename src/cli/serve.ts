/** `mor serve`: the OpenAI-compatible server and playground for one checkpoint. */
import { Option, type Command } from 'commander';
import { SERVE_DEFAULTS, startServer, type ServeOptions } from '../serve/server.js';
import { int, log, num } from './flags.js';
import { definedOnly } from '../util/defined.js';
import { storageDtype } from '../backend/bf16.js';

interface ServeFlags {
  model: string;
  host: string;
  port: number;
  maxBatch: number;
  batching: 'depth' | 'sequence';
  maxQueue: number;
  apiKey?: string;
  runs?: string;
  requestTimeout: number;
  dtype: string;
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('serve a checkpoint: OpenAI-compatible API (/v1/completions, /v1/chat/completions, /v1/models), /health, /metrics, and the web playground at /')
    .requiredOption('--model <dir>', 'checkpoint directory or Hugging Face Llama directory (fixed for the server\'s life)')
    .option('--host <addr>', 'address to listen on', SERVE_DEFAULTS.host)
    .option('--port <n>', 'port (0: a free one, printed)', int('--port', 0), SERVE_DEFAULTS.port)
    .option('--max-batch <n>', 'requests decoded together at most', int('--max-batch', 1), SERVE_DEFAULTS.maxBatch)
    .addOption(new Option('--batching <mode>', 'depth-wise or sequence-wise continuous batching').choices(['depth', 'sequence']).default(SERVE_DEFAULTS.batching))
    .option('--max-queue <n>', 'requests waiting beyond the batch before new ones get 429', int('--max-queue', 0), SERVE_DEFAULTS.maxQueue)
    .option('--api-key <key>', 'require "Authorization: Bearer KEY" on /v1/*')
    .option('--runs <dir>', 'a folder of training runs to plot at /runs')
    .option('--dtype <type>', "storage of the packed weights and the K/V pool: 'f32' or 'bf16' (half the bytes; f32 arithmetic)", 'f32')
    .option('--request-timeout <seconds>', 'end a request still running after this long (its K/V is freed)', num('--request-timeout', 0.001), SERVE_DEFAULTS.requestTimeoutS)
    .action(async (f: ServeFlags) => {
      const opts: ServeOptions = {
        modelDir: f.model,
        host: f.host,
        port: f.port,
        maxBatch: f.maxBatch,
        batching: f.batching,
        maxQueue: f.maxQueue,
        requestTimeoutS: f.requestTimeout,
        dtype: storageDtype('--dtype', f.dtype),
        ...definedOnly({ apiKey: f.apiKey, runsDir: f.runs }),
      };
      const server = await startServer(opts);
      await server.ready;
      process.stdout.write(`listening on ${server.url}\n`);
      await new Promise<void>((resolve) => {
        const stop = (signal: string): void => {
          log(`${signal}: finishing in-flight requests, then exiting`);
          void server.close().then(resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    });
}
