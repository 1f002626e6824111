/**
 * The HTTP thread's side of the engine worker: starts it, sends requests and cancellations,
 * and routes what comes back to each request's listener.
 */
import { Worker } from 'node:worker_threads';
import { MorError } from '../errors.js';
import { applyOpenMpDefaults } from '../backend/native.js';
import type { BatchingMode } from '../infer/engine.js';
import type { StorageDtype } from '../backend/bf16.js';
import type { DoneInfo, EngineStats, FromWorker, GenerationOptions, ModelInfo, ToWorker, WireToken } from './messages.js';

export interface RequestListener {
  onAccepted(promptTokens: number): void;
  onRejected(message: string, param: string | null): void;
  onPiece(text: string, tokens: readonly WireToken[]): void;
  onDone(info: DoneInfo): void;
  onError(message: string): void;
}

export class EngineWorker {
  private readonly listeners = new Map<number, RequestListener>();
  private nextId = 1;
  stats: EngineStats;

  private constructor(private readonly worker: Worker, readonly info: ModelInfo, maxBatch: number) {
    this.stats = { running: 0, waiting: 0, kvBytes: 0, maxBatch };
    worker.on('message', (m: FromWorker) => this.route(m));
  }

  /** Start a worker on a model directory; resolves once the model is loaded. */
  static start(modelDir: string, maxBatch: number, batching: BatchingMode, dtype: StorageDtype): Promise<EngineWorker> {
    // the worker loads the addon: its process.env is a copy, so the OpenMP defaults go into the
    // process environment from here
    applyOpenMpDefaults();
    const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: { modelDir, maxBatch, batching, dtype } });
    return new Promise((resolve, reject) => {
      const onMessage = (m: FromWorker): void => {
        if (m.type === 'ready') {
          worker.off('message', onMessage);
          resolve(new EngineWorker(worker, m.info, maxBatch));
        } else if (m.type === 'failed') {
          void worker.terminate();
          reject(new MorError('E_CHECKPOINT', m.message));
        }
      };
      worker.on('message', onMessage);
      worker.once('error', reject);
    });
  }

  /** Requests submitted and not yet done. */
  get outstanding(): number {
    return this.listeners.size;
  }

  submit(prompt: string, options: GenerationOptions, listener: RequestListener): { cancel: () => void } {
    const id = this.nextId++;
    this.listeners.set(id, listener);
    this.send({ type: 'submit', id, prompt, options });
    return { cancel: () => this.listeners.has(id) && this.send({ type: 'cancel', id }) };
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }

  private send(m: ToWorker): void {
    this.worker.postMessage(m);
  }

  private route(m: FromWorker): void {
    if (m.type === 'stats') {
      this.stats = m.stats;
      return;
    }
    if (m.type === 'ready' || m.type === 'failed') return;
    const l = this.listeners.get(m.id);
    if (!l) return;
    switch (m.type) {
      case 'accepted':
        l.onAccepted(m.promptTokens);
        break;
      case 'rejected':
        this.listeners.delete(m.id);
        l.onRejected(m.message, m.param);
        break;
      case 'piece':
        l.onPiece(m.text, m.tokens);
        break;
      case 'done':
        this.listeners.delete(m.id);
        l.onDone(m.info);
        break;
      case 'error':
        this.listeners.delete(m.id);
        l.onError(m.message);
        break;
    }
  }
}
