/** Prometheus metrics of the server (prom-client, one registry per server). */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineStats } from './messages.js';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'mor_requests_total', help: 'HTTP requests to the API, by endpoint and status', labelNames: ['endpoint', 'status'], registers: [this.registry] });
  readonly promptTokens = new Counter({ name: 'mor_prompt_tokens_total', help: 'Prompt tokens processed', registers: [this.registry] });
  readonly generatedTokens = new Counter({ name: 'mor_generated_tokens_total', help: 'Tokens generated', registers: [this.registry] });
  readonly queueLength = new Gauge({ name: 'mor_queue_length', help: 'Requests waiting for a batch slot', registers: [this.registry] });
  readonly running = new Gauge({ name: 'mor_running_requests', help: 'Requests being decoded', registers: [this.registry] });
  readonly occupancy = new Gauge({ name: 'mor_batch_occupancy', help: 'Running requests / max batch', registers: [this.registry] });
  readonly kvBytes = new Gauge({ name: 'mor_kv_bytes_in_use', help: 'Bytes of the paged K/V pool held by sequences', registers: [this.registry] });
  readonly meanDepth = new Gauge({ name: 'mor_mean_depth', help: 'Mean recursions per generated token, over the last 1024 tokens', registers: [this.registry] });
  readonly depth: Histogram;
  readonly ttft = new Histogram({
    name: 'mor_time_to_first_token_seconds',
    help: 'Time from request to its first generated token',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly perToken = new Histogram({
    name: 'mor_time_per_output_token_seconds',
    help: 'Mean time between generated tokens of a request',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5],
    registers: [this.registry],
  });
  private readonly recentDepths: number[] = [];

  constructor(numRecursions: number) {
    this.depth = new Histogram({
      name: 'mor_token_depth',
      help: 'Recursions each generated token ran',
      buckets: Array.from({ length: numRecursions }, (_, i) => i + 1),
      registers: [this.registry],
    });
    collectDefaultMetrics({ register: this.registry, prefix: 'mor_' });
  }

  engine(s: EngineStats): void {
    this.queueLength.set(s.waiting);
    this.running.set(s.running);
    this.occupancy.set(s.maxBatch > 0 ? s.running / s.maxBatch : 0);
    this.kvBytes.set(s.kvBytes);
  }

  tokens(depths: readonly number[]): void {
    for (const d of depths) {
      this.depth.observe(d);
      this.recentDepths.push(d);
    }
    if (this.recentDepths.length > 1024) this.recentDepths.splice(0, this.recentDepths.length - 1024);
    this.generatedTokens.inc(depths.length);
    if (this.recentDepths.length) this.meanDepth.set(this.recentDepths.reduce((a, b) => a + b, 0) / this.recentDepths.length);
  }
}
