/**
 * The machine's own ceilings, measured in the same run as the figures compared with them
 * (DESIGN.md, Performance): an FMA-throughput probe for every instruction-set variant of the
 * native kernels this CPU runs (independent FMA chains on every thread, the variant's vectors) and
 * a streaming-read probe over a buffer well beyond the L3 cache. Shared by the kernel and decoding
 * benchmarks; every line they print names the CPU, the SIMD variant and the threads (context()).
 */
import type { Backend } from '../src/backend/backend.js';
import { nativeCpuInfo, probeFmaGflops, probeStreamReadGbps } from '../src/backend/native.js';

export interface Ceilings {
  cpu: string;
  threads: number;
  /** GFLOP/s of the FMA probe per variant (MOR_SIMD name). */
  fmaGflops: Readonly<Record<string, number>>;
  /** GB/s of the streaming read, and the buffer it read. */
  streamReadGbps: number;
  streamMegabytes: number;
}

/** cpu / simd / threads of a backend, for every JSON line. */
export function context(be: Backend): { cpu: string; simd: string; threads: number } {
  const i = be.info();
  return { cpu: i.cpu ?? nativeCpuInfo()?.cpu ?? 'unknown', simd: i.simd, threads: i.threads };
}

/**
 * Probes the native backend `be` (null when it is not the native one): each variant in
 * info().simdAvailable for `seconds`, then the variant in use is restored; the stream read over
 * max(8 × L3, 512 MiB).
 */
export function measureCeilings(be: Backend, seconds = 0.3): Ceilings | null {
  if (be.name !== 'native' || !be.setSimd) return null;
  const info = be.info();
  const fma: Record<string, number> = {};
  try {
    for (const simd of info.simdAvailable ?? []) {
      be.setSimd(simd);
      fma[simd] = probeFmaGflops(info.threads, seconds) ?? NaN;
    }
  } finally {
    be.setSimd(info.simd);
  }
  const megabytes = streamMegabytes();
  return {
    cpu: info.cpu ?? 'unknown',
    threads: info.threads,
    fmaGflops: fma,
    streamReadGbps: probeStreamReadGbps(megabytes, info.threads, 3) ?? NaN,
    streamMegabytes: megabytes,
  };
}

/** The streaming probe's buffer: max(8 × L3, 512 MiB), in MiB. */
function streamMegabytes(): number {
  const l3 = nativeCpuInfo()?.caches.l3 ?? 32 << 20;
  return Math.max(512, Math.ceil((8 * l3) / (1 << 20)));
}

/** The streaming read alone (GB/s; NaN off the native backend): measureCeilings' probe. */
export function measureStreamRead(be: Backend): number {
  if (be.name !== 'native') return Number.NaN;
  return probeStreamReadGbps(streamMegabytes(), be.info().threads, 3) ?? Number.NaN;
}
