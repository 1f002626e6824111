/**
 * Training progress: one line redrawn in place on a terminal
 *   step 120/300 │ loss 4.213 │ lr 3.0e-3 │ 1,532 tok/s │ MFU 41% │ ETA 1:58
 * and plain lines (every ~5% of the run, and every validation) when the output is not a TTY.
 * With `json` every metrics record is printed as one JSON line instead.
 */
function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${r}` : `${m}:${r}`;
}

const list = (x: unknown): string => (Array.isArray(x) ? x.map((v: number) => v.toFixed(2)).join('/') : '');

/** MoE on the progress line: mean MaxVio over the MoE routers, and the dropped fraction when any slot was dropped. */
function moeSummary(m: Record<string, unknown>): string {
  if (typeof m['moe_max_vio_mean'] !== 'number') return '';
  const dropped = Array.isArray(m['moe_dropped']) ? (m['moe_dropped'] as number[]) : [];
  const drop = dropped.some((x) => x > 0) ? ` drop ${(dropped.reduce((a, x) => a + x, 0) / dropped.length).toFixed(3)}` : '';
  return ` │ MoE MaxVio ${m['moe_max_vio_mean'].toFixed(2)}${drop}`;
}

/** MoR routing on the progress line: selected fractions and sampling accuracy, or depth loads. */
function routingSummary(m: Record<string, unknown>): string {
  return morSummary(m) + moeSummary(m);
}

function morSummary(m: Record<string, unknown>): string {
  if (Array.isArray(m['load']) && (m['load'] as number[]).length > 0) {
    return ` │ load ${list(m['load'])} MaxVio ${(m['max_vio'] as number).toFixed(2)}`;
  }
  if (Array.isArray(m['selected_fraction'])) {
    return ` │ sel ${list(m['selected_fraction'])} acc ${list(m['sampling_accuracy'])}`;
  }
  return '';
}

export class ProgressPrinter {
  private lastLineLength = 0;
  private readonly tty: boolean;
  private tokensPerSecond = 0;

  constructor(private readonly out: NodeJS.WriteStream, private readonly json: boolean) {
    this.tty = out.isTTY === true && !json;
  }

  update(m: Record<string, unknown>): void {
    if (this.json) {
      this.out.write(JSON.stringify(m) + '\n');
      return;
    }
    const step = m['step'] as number;
    const total = m['total_steps'] as number;
    if (m['type'] === 'eval') {
      const bpb = m['val_bpb'] === undefined ? '' : ` │ bits/byte ${(m['val_bpb'] as number).toFixed(3)}`;
      this.line(`step ${step}/${total} │ validation NLL ${(m['val_nll'] as number).toFixed(4)} │ ppl ${(m['val_ppl'] as number).toFixed(1)}${bpb}`, true);
      return;
    }
    const tps = m['tokens_per_s'] as number;
    this.tokensPerSecond = this.tokensPerSecond === 0 ? tps : 0.9 * this.tokensPerSecond + 0.1 * tps;
    const stepSeconds = (m['step_ms'] as number) / 1000;
    const eta = (total - step) * stepSeconds;
    const mfu = m['mfu'] === undefined ? '' : ` │ MFU ${Math.round((m['mfu'] as number) * 100)}%`;
    const text =
      `step ${step}/${total} │ loss ${(m['loss'] as number).toFixed(3)} │ lr ${(m['lr'] as number).toExponential(1)} │ ` +
      `${Math.round(this.tokensPerSecond).toLocaleString()} tok/s${mfu}${routingSummary(m)} │ ETA ${clock(eta)}`;
    const every = Math.max(1, Math.round(total / 20));
    if (this.tty || step % every === 0 || step === 1 || step === total) this.line(text, !this.tty);
  }

  private line(text: string, permanent: boolean): void {
    if (this.tty) {
      const pad = Math.max(0, this.lastLineLength - text.length);
      this.out.write(`\r${text}${' '.repeat(pad)}${permanent ? '\n' : ''}`);
      this.lastLineLength = permanent ? 0 : text.length;
    } else {
      this.out.write(text + '\n');
    }
  }

  done(): void {
    if (this.tty && this.lastLineLength > 0) this.out.write('\n');
    this.lastLineLength = 0;
  }
}
