/**
 * `mor generate --show-depth`: each generated piece of text marked with the recursions its
 * tokens ran — coloured on a terminal, `text[depth]` otherwise — and a legend and depth
 * histogram at the end.
 */

/** ANSI foreground colours for depth 1, 2, …: cool (shallow) to warm (deep); deeper reuse the last. */
const COLOURS = [34, 36, 32, 33, 31, 35];
const RESET = '\x1b[0m';

function colourOf(depth: number): string {
  return `\x1b[${COLOURS[Math.min(COLOURS.length, Math.max(1, depth)) - 1] as number}m`;
}

export class DepthView {
  private readonly counts: number[];

  /** colour: ANSI colours (a terminal without NO_COLOR) or brackets. */
  constructor(readonly numRecursions: number, readonly colour: boolean) {
    this.counts = new Array<number>(numRecursions + 1).fill(0);
  }

  /** Mark one piece of text with its tokens' depths (the deepest, when a piece spans several tokens). */
  paint(piece: string, depths: readonly number[]): string {
    for (const d of depths) this.counts[Math.min(d, this.numRecursions)] = (this.counts[Math.min(d, this.numRecursions)] as number) + 1;
    if (depths.length === 0 || piece.length === 0) return piece;
    if (!this.colour) return `${piece}[${depths.join(',')}]`;
    return `${colourOf(Math.max(...depths))}${piece}${RESET}`;
  }

  legend(): string {
    const items = Array.from({ length: this.numRecursions }, (_, i) => (this.colour ? `${colourOf(i + 1)}■ ${i + 1}${RESET}` : `[${i + 1}]`));
    return `depth (recursions): ${items.join('  ')}`;
  }

  /** One bar per depth over the tokens painted so far. */
  histogram(width = 40): string {
    const total = this.counts.reduce((a, b) => a + b, 0);
    const lines: string[] = [];
    for (let d = 1; d <= this.numRecursions; d++) {
      const n = this.counts[d] as number;
      const frac = total > 0 ? n / total : 0;
      const bar = '█'.repeat(Math.round(frac * width));
      lines.push(`  depth ${d}  ${this.colour ? `${colourOf(d)}${bar}${RESET}` : bar} ${n} (${(100 * frac).toFixed(0)}%)`);
    }
    return lines.join('\n');
  }
}
