/**
 * Softmax attention over explicit positions and segments (see AttentionLayout in backend.ts).
 *
 *   q (Nq, H, HD), k/v (Nk, KVH, HD); query head h reads kv head floor(h / (H / KVH)).
 *   Query row i of segment s sees key row j of s iff kPos[j] ≤ qPos[i].
 *
 * The reference evaluates the rule key by key (it does not rely on kPos being sorted), keeps
 * the softmax in float64 scratch, and recomputes probabilities in the backward from the saved
 * lse, as FlashAttention does: p_ij = exp(scale·q_i·k_j − lse_i).
 */
import type { AttentionLayout, FloatArray, PagedAttentionLayout } from '../backend.js';
import { fromBf16 } from '../bf16.js';
import { DtypeError } from '../../errors.js';

interface Segment {
  qStart: number;
  qLen: number;
  kStart: number;
  kLen: number;
}

function segmentAt(segments: Int32Array, s: number): Segment {
  return {
    qStart: segments[4 * s]!,
    qLen: segments[4 * s + 1]!,
    kStart: segments[4 * s + 2]!,
    kLen: segments[4 * s + 3]!,
  };
}

function maxKeyLength(segments: Int32Array): number {
  let maxLen = 0;
  for (let s = 0; s < segments.length / 4; s++) maxLen = Math.max(maxLen, segments[4 * s + 3]!);
  return maxLen;
}

/** Dot product of two HD-long rows, accumulated in float64. */
function dotRows(x: FloatArray, xOff: number, y: FloatArray, yOff: number, len: number): number {
  let acc = 0;
  for (let d = 0; d < len; d++) acc += x[xOff + d]! * y[yOff + d]!;
  return acc;
}

export function attentionForward(
  layout: AttentionLayout,
  q: FloatArray, // (Nq, H, HD)
  k: FloatArray, // (Nk, KVH, HD)
  v: FloatArray, // (Nk, KVH, HD)
  out: FloatArray, // (Nq, H, HD)
  lse: FloatArray, // (Nq, H)
): void {
  const { numHeads: H, numKvHeads: KVH, headDim: HD, scale, segments, qPos, kPos } = layout;
  const group = H / KVH; // query heads per kv head
  out.fill(0); // rows outside every segment, and queries that see no key
  lse.fill(-Infinity);

  const probs = new Float64Array(maxKeyLength(segments)); // (kLen) scores, then exp(score − max)
  const acc = new Float64Array(HD); // (HD) weighted sum of values

  for (let s = 0; s < segments.length / 4; s++) {
    const { qStart, qLen, kStart, kLen } = segmentAt(segments, s);
    for (let i = qStart; i < qStart + qLen; i++) {
      const pos = qPos[i]!;
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / group);
        const qOff = (i * H + h) * HD;

        let maxScore = -Infinity;
        let numVisible = 0;
        for (let j = 0; j < kLen; j++) {
          if (kPos[kStart + j]! > pos) continue;
          const score = scale * dotRows(q, qOff, k, ((kStart + j) * KVH + kvh) * HD, HD);
          probs[j] = score;
          if (score > maxScore) maxScore = score;
          numVisible++;
        }
        if (numVisible === 0) continue; // out stays 0, lse −Infinity

        let sum = 0;
        acc.fill(0);
        for (let j = 0; j < kLen; j++) {
          if (kPos[kStart + j]! > pos) continue;
          const p = Math.exp(probs[j]! - maxScore);
          sum += p;
          const vOff = ((kStart + j) * KVH + kvh) * HD;
          for (let d = 0; d < HD; d++) acc[d]! += p * v[vOff + d]!;
        }
        for (let d = 0; d < HD; d++) out[qOff + d] = acc[d]! / sum;
        lse[i * H + h] = maxScore + Math.log(sum);
      }
    }
  }
}

/**
 * With p_ij the probabilities, dP_ij = dOut_i·v_j and Δ_i = dOut_i·out_i = Σ_j p_ij dP_ij:
 *   dS_ij = p_ij (dP_ij − Δ_i);  dQ_i = scale Σ_j dS_ij k_j;  dK_j = scale Σ_i dS_ij q_i;
 *   dV_j = Σ_i p_ij dOut_i   (sums over the query heads sharing a kv head, for dK and dV).
 */
export function attentionBackward(
  layout: AttentionLayout,
  q: FloatArray, // (Nq, H, HD)
  k: FloatArray, // (Nk, KVH, HD)
  v: FloatArray, // (Nk, KVH, HD)
  out: FloatArray, // (Nq, H, HD)
  lse: FloatArray, // (Nq, H)
  dOut: FloatArray, // (Nq, H, HD)
  dQ: FloatArray, // (Nq, H, HD)
  dK: FloatArray, // (Nk, KVH, HD)
  dV: FloatArray, // (Nk, KVH, HD)
): void {
  const { numHeads: H, numKvHeads: KVH, headDim: HD, scale, segments, qPos, kPos } = layout;
  const group = H / KVH;
  dQ.fill(0);
  // dK and dV sum over many queries: accumulate in float64 whatever the output type.
  const dK64 = new Float64Array(dK.length);
  const dV64 = new Float64Array(dV.length);
  const dQRow = new Float64Array(HD);

  for (let s = 0; s < segments.length / 4; s++) {
    const { qStart, qLen, kStart, kLen } = segmentAt(segments, s);
    for (let i = qStart; i < qStart + qLen; i++) {
      const pos = qPos[i]!;
      for (let h = 0; h < H; h++) {
        const rowLse = lse[i * H + h]!;
        if (rowLse === -Infinity) continue; // saw no key: no gradient
        const kvh = Math.floor(h / group);
        const qOff = (i * H + h) * HD;
        const delta = dotRows(dOut, qOff, out, qOff, HD);

        dQRow.fill(0);
        for (let j = 0; j < kLen; j++) {
          if (kPos[kStart + j]! > pos) continue;
          const kvOff = ((kStart + j) * KVH + kvh) * HD;
          const p = Math.exp(scale * dotRows(q, qOff, k, kvOff, HD) - rowLse);
          const dP = dotRows(dOut, qOff, v, kvOff, HD);
          const dS = p * (dP - delta);
          for (let d = 0; d < HD; d++) {
            dQRow[d]! += scale * dS * k[kvOff + d]!;
            dK64[kvOff + d]! += scale * dS * q[qOff + d]!;
            dV64[kvOff + d]! += p * dOut[qOff + d]!;
          }
        }
        for (let d = 0; d < HD; d++) dQ[qOff + d] = dQRow[d]!;
      }
    }
  }
  dK.set(dK64);
  dV.set(dV64);
}

/**
 * Attention against a paged KV pool (see Backend.attentionPaged): each query row walks its own
 * stream of slots through the block table, keeps the slots at positions ≤ its own, and takes a
 * float64 softmax over them.
 */
export function attentionPaged(
  layout: PagedAttentionLayout,
  q: FloatArray, // (Nq, H, HD)
  kPoolStored: FloatArray | Uint16Array, // (numSlots, KVH, HD); Uint16Array: bf16, read widened
  vPoolStored: FloatArray | Uint16Array, // (numSlots, KVH, HD)
  out: FloatArray, // (Nq, H, HD)
): void {
  if ((kPoolStored instanceof Uint16Array) !== (vPoolStored instanceof Uint16Array)) {
    throw new DtypeError('attentionPaged: kPool and vPool must have one dtype (both float or both Uint16Array bf16)');
  }
  const kPool = kPoolStored instanceof Uint16Array ? fromBf16(kPoolStored) : kPoolStored;
  const vPool = vPoolStored instanceof Uint16Array ? fromBf16(vPoolStored) : vPoolStored;
  const { numHeads: H, numKvHeads: KVH, headDim: HD, scale, blockSize, qPos, posPool, streams, blockTables } = layout;
  const group = H / KVH;
  const nq = qPos.length;
  let maxLen = 0;
  for (let i = 0; i < nq; i++) maxLen = Math.max(maxLen, streams[2 * i + 1]!);
  const slots = new Int32Array(maxLen); // (n) visible slots of the current query
  const probs = new Float64Array(maxLen);
  const acc = new Float64Array(HD);
  out.fill(0);
  for (let i = 0; i < nq; i++) {
    const offset = streams[2 * i]!;
    const n = streams[2 * i + 1]!;
    let visible = 0;
    for (let j = 0; j < n; j++) {
      const slot = blockTables[offset + Math.floor(j / blockSize)]! * blockSize + (j % blockSize);
      if (posPool[slot]! <= qPos[i]!) slots[visible++] = slot;
    }
    if (visible === 0) continue;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / group);
      const qOff = (i * H + h) * HD;
      let max = -Infinity;
      for (let j = 0; j < visible; j++) {
        const s = scale * dotRows(q, qOff, kPool, (slots[j]! * KVH + g) * HD, HD);
        probs[j] = s;
        if (s > max) max = s;
      }
      let denom = 0;
      for (let j = 0; j < visible; j++) {
        const e = Math.exp(probs[j]! - max);
        probs[j] = e;
        denom += e;
      }
      acc.fill(0);
      for (let j = 0; j < visible; j++) {
        const w = probs[j]! / denom;
        const vOff = (slots[j]! * KVH + g) * HD;
        for (let d = 0; d < HD; d++) acc[d] = acc[d]! + w * vPool[vOff + d]!;
      }
      for (let d = 0; d < HD; d++) out[qOff + d] = acc[d]!;
    }
  }
}
