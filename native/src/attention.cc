// Fused softmax attention, forward and backward, over the segment/position layout of
// backend.ts (AttentionLayout). Flash-attention style, but since each query sees a prefix of its
// segment's keys, a block of queries needs one pass over its visible key prefix (no online
// rescaling): S = scale·Q·Kᵀ for the block into a scratch row block, exact softmax per row, then
// P·V. The backward recomputes P from the saved lse.
//
// Layout of the work:
//   1. Per (segment, kv head): pack K as Kᵀ tiles (KT keys × HD, k-major) and V as padded rows,
//      once, shared by the H/KVH query heads of the group and every query block.
//   2. Tasks (segment, query head, block of BQ query rows), run in parallel with a dynamic schedule,
//      heaviest (last) blocks first. Each task owns its output rows (out/lse, dQ).
//   3. Backward: dK and dV rows are shared by the heads of a group and by all query blocks, so each
//      thread accumulates into a private padded copy, summed at the end (cheap: O(threads·Nk·HD)
//      against O(Nq·Nk·HD) for the attention itself). This keeps every thread busy even with one
//      segment and one kv head, where ownership by (segment, kv head) would leave threads idle.
// Inner products use register-blocked micro-kernels on SIMD vectors (see common.h), never BLAS, so
// no library thread pool runs inside our parallel region.
#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include "bf16.h"
#include "bf16_dot.h"
#include "common.h"
#include "isa.h"
#include "variant.h"

// Dense attention over bf16 K/V on vdpbf16ps (attentionForwardBf16) where the variant has it.

MOR_ISA_BEGIN

namespace {

constexpr int KT = 2 * W;  // keys per S tile (two vectors)
constexpr int BQ = 64;     // query rows per task
constexpr int RQK = 8;     // query rows per S micro-kernel
constexpr int RPV = 4;     // rows per P·V micro-kernel
constexpr int RTK = 4;     // keys per dK/dV micro-kernel (divides KT)
constexpr int NVMAX = 4;   // vectors of the head dim per micro-kernel pass
static_assert(KT % RTK == 0, "RTK must divide KT");
static_assert(BQ % RQK == 0 && BQ % RPV == 0, "BQ must be a multiple of the row blocks");

inline int64_t roundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// s[r, 0:KT) = Σ_d a[r, d] · kt[d, 0:KT),  r < R.   a rows stride lda; kt a packed tile (hd, KT).
template <int R>
MOR_INLINE void kernQK(int64_t hd, const float* MOR_RESTRICT a, int64_t lda, const float* MOR_RESTRICT kt,
                       float* MOR_RESTRICT s, int64_t lds) {
  vf acc[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = vf{};
  for (int64_t d = 0; d < hd; ++d) {
    const vf b0 = vload(kt + d * KT);
    const vf b1 = vload(kt + d * KT + W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vf ar = vset1(a[r * lda + d]);
      acc[r][0] += ar * b0;
      acc[r][1] += ar * b1;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    vstore(s + r * lds, acc[r][0]);
    vstore(s + r * lds + W, acc[r][1]);
  }
}

// out[r, 0:NV·W) (+)= Σ_{j<n} P(r, j) · v[j, 0:NV·W),  r < R,  with P(r, j) = p[r·pr + j·pj].
// Serves P·V (pr = row stride, pj = 1) and the transposed products of the backward
// (dK += dSᵀ·Q: pr = 1, pj = row stride).
template <int R, int NV, bool ACC>
MOR_INLINE void kernPV(int64_t n, const float* MOR_RESTRICT p, int64_t pr, int64_t pj, const float* MOR_RESTRICT v,
                       int64_t ldv, float* MOR_RESTRICT out, int64_t ldo) {
  vf acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) acc[r][c] = vf{};
  for (int64_t j = 0; j < n; ++j) {
    vf vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) vv[c] = vload(v + j * ldv + c * W);
    const float* pp = p + j * pj;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vf pr_ = vset1(pp[r * pr]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) acc[r][c] += pr_ * vv[c];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) {
      float* o = out + r * ldo + c * W;
      if (ACC)
        vstore(o, vload(o) + acc[r][c]);
      else
        vstore(o, acc[r][c]);
    }
}

// kernPV over the whole padded head dim (hdv vectors), NVMAX vectors per pass.
template <int R, bool ACC>
inline void productRows(int64_t hdv, int64_t n, const float* p, int64_t pr, int64_t pj, const float* v, int64_t ldv,
                        float* out, int64_t ldo) {
  if (n <= 0 && ACC) return;
  int64_t c = 0;
  for (; c + NVMAX <= hdv; c += NVMAX) kernPV<R, NVMAX, ACC>(n, p, pr, pj, v + c * W, ldv, out + c * W, ldo);
  switch (hdv - c) {
    case 1: kernPV<R, 1, ACC>(n, p, pr, pj, v + c * W, ldv, out + c * W, ldo); break;
    case 2: kernPV<R, 2, ACC>(n, p, pr, pj, v + c * W, ldv, out + c * W, ldo); break;
    case 3: kernPV<R, 3, ACC>(n, p, pr, pj, v + c * W, ldv, out + c * W, ldo); break;
    default: break;
  }
}

struct Seg {
  int64_t qStart, qLen, kStart, kLen;
  int64_t nkp;      // kLen rounded up to KT
  int64_t packOff;  // offset of this segment's packs (per kv head: packStride floats)
  int64_t packStride;
  int64_t blocks;  // query blocks
  bool direct;     // few queries (decoding): no packing, one task per kv head (see decodeTask)
};

struct Task {
  int32_t seg, head, block;  // block −1: a direct task, head is then the kv head
};

// Segments whose query rows × heads per kv head fit in this many rows skip packing.
constexpr int64_t kDirectRows = 8;

struct Plan {
  std::vector<Seg> segs;
  std::vector<Task> tasks;
  std::vector<int32_t> nvis;     // (Nq) visible keys of each query row (0 outside segments)
  std::vector<uint8_t> covered;  // (Nq) row belongs to a segment
  int64_t packFloats = 0;
  int64_t hdp = 0;  // head dim padded to W
};

// packs per (segment, kv head): [KTt: nkp·HD][Vp or Kp: nkp·hdp] (+ [VTt: nkp·HD] for backward)
Plan makePlan(const AttnShape& a, bool backward) {
  Plan pl;
  const int64_t S = a.numSegments;
  pl.hdp = roundUp(a.headDim, W);
  pl.segs.resize(static_cast<size_t>(S));
  pl.nvis.assign(static_cast<size_t>(a.nq), 0);
  pl.covered.assign(static_cast<size_t>(a.nq), 0);
  int64_t off = 0;
  for (int64_t s = 0; s < S; ++s) {
    Seg& g = pl.segs[static_cast<size_t>(s)];
    g.qStart = a.segments[4 * s];
    g.qLen = a.segments[4 * s + 1];
    g.kStart = a.segments[4 * s + 2];
    g.kLen = a.segments[4 * s + 3];
    g.nkp = roundUp(g.kLen, KT);
    const int64_t group = a.numHeads / a.numKvHeads;
    g.direct = !backward && g.qLen > 0 && g.qLen * group <= kDirectRows && a.headDim % W == 0;
    g.packStride = g.direct ? 0 : g.nkp * a.headDim + g.nkp * pl.hdp + (backward ? g.nkp * a.headDim : 0);
    g.packOff = off;
    off += g.packStride * a.numKvHeads;
    g.blocks = (g.qLen + BQ - 1) / BQ;
    const int32_t* kp = a.kPos + g.kStart;
    for (int64_t i = g.qStart; i < g.qStart + g.qLen; ++i) {
      pl.covered[static_cast<size_t>(i)] = 1;
      pl.nvis[static_cast<size_t>(i)] = static_cast<int32_t>(std::upper_bound(kp, kp + g.kLen, a.qPos[i]) - kp);
    }
  }
  pl.packFloats = off;
  // Heaviest blocks (last in a segment: longest key prefix) first, for the dynamic schedule.
  int64_t maxBlocks = 0;
  for (const Seg& g : pl.segs) maxBlocks = std::max(maxBlocks, g.blocks);
  for (int64_t s = 0; s < S; ++s)
    if (pl.segs[static_cast<size_t>(s)].direct)
      for (int64_t kvh = 0; kvh < a.numKvHeads; ++kvh)
        pl.tasks.push_back({static_cast<int32_t>(s), static_cast<int32_t>(kvh), -1});
  for (int64_t b = maxBlocks - 1; b >= 0; --b)
    for (int64_t s = 0; s < S; ++s) {
      const Seg& g = pl.segs[static_cast<size_t>(s)];
      if (b >= g.blocks || g.direct) continue;
      for (int64_t h = 0; h < a.numHeads; ++h)
        pl.tasks.push_back({static_cast<int32_t>(s), static_cast<int32_t>(h), static_cast<int32_t>(b)});
    }
  return pl;
}

// Pack K (and V) of segment g, kv head kvh.
//   ktt  (nkp/KT tiles) × (HD, KT): Kᵀ tiles, zero keys past kLen
//   rows (nkp, hdp): rows of `rowsSrc` padded with zeros
void packSeg(const AttnShape& a, const Seg& g, int64_t kvh, const float* tileSrc, const float* rowsSrc,
             float* ktt, float* rows, int64_t hdp) {
  const int64_t HD = a.headDim, ld = a.numKvHeads * HD;
  for (int64_t t = 0; t < g.nkp; t += KT) {
    float* tile = ktt + t * HD;
    for (int64_t jj = 0; jj < KT; ++jj) {
      const int64_t j = t + jj;
      if (j < g.kLen) {
        const float* src = tileSrc + (g.kStart + j) * ld + kvh * HD;
        for (int64_t d = 0; d < HD; ++d) tile[d * KT + jj] = src[d];
      } else {
        for (int64_t d = 0; d < HD; ++d) tile[d * KT + jj] = 0.f;
      }
    }
  }
  for (int64_t j = 0; j < g.nkp; ++j) {
    float* r = rows + j * hdp;
    if (j < g.kLen) {
      const float* src = rowsSrc + (g.kStart + j) * ld + kvh * HD;
      std::memcpy(r, src, sizeof(float) * static_cast<size_t>(HD));
      for (int64_t d = HD; d < hdp; ++d) r[d] = 0.f;
    } else {
      std::memset(r, 0, sizeof(float) * static_cast<size_t>(hdp));
    }
  }
}

// Copy BQ rows of head h of x (Nq, H, HD) into a padded block (bqPad, hdp), times mult.
inline void loadRows(const AttnShape& a, const float* x, int64_t i0, int64_t bq, int64_t bqPad, int64_t h, float mult,
                     float* dst, int64_t hdp) {
  const int64_t HD = a.headDim;
  for (int64_t r = 0; r < bqPad; ++r) {
    float* d = dst + r * hdp;
    if (r < bq) {
      const float* src = x + ((i0 + r) * a.numHeads + h) * HD;
      for (int64_t c = 0; c < HD; ++c) d[c] = src[c] * mult;
      for (int64_t c = HD; c < hdp; ++c) d[c] = 0.f;
    } else {
      std::memset(d, 0, sizeof(float) * static_cast<size_t>(hdp));
    }
  }
}

// The S tiles of a query block of bq rows: each group of ≤ RQK rows over its visible key prefix
// (the longest nv of the group), tile(R, first row, first key) with R the micro-kernel height as
// a type (RQK, 4, 2 or 1). A last group of fewer than RQK rows (decoding: one query row per
// segment) runs a narrower kernel instead of padding.
template <class Tile>
inline void scoreTiles(const int32_t* nv, int64_t bq, Tile&& tile) {
  for (int64_t rg = 0; rg < bq; rg += RQK) {
    int64_t ke = 0;
    const int64_t rows = std::min<int64_t>(RQK, bq - rg);
    for (int64_t r = rg; r < rg + rows; ++r) ke = std::max<int64_t>(ke, nv[r]);
    for (int64_t t = 0; t < ke; t += KT) {
      if (rows > 4)
        tile(std::integral_constant<int, RQK>{}, rg, t);
      else if (rows > 2)
        tile(std::integral_constant<int, 4>{}, rg, t);
      else if (rows == 2)
        tile(std::integral_constant<int, 2>{}, rg, t);
      else
        tile(std::integral_constant<int, 1>{}, rg, t);
    }
  }
}

#ifdef MOR_BF16_DOT
// ---- bf16 dense blocks (vdpbf16ps) ---------------------------------------------------------------
// Pairs (bf16_dot.h): Q·Kᵀ pairs along the head dim (lanes: keys), P·V along the keys (lanes: dims).

// Pack K and V of segment g, kv head kvh, as bf16 pairs (hp = ⌈HD/2⌉ pairs of the head dim):
//   kt2  (nkp/KT tiles) × (hp, KT) words: word [p][jj] = (k_j[2p], k_j[2p+1]), zero past kLen
//   v2   (nkp/2, hdp) words: word [jp][c] = (v_2jp[c], v_2jp+1[c]), zero past kLen and HD
void packSegBf16(const AttnShape& a, const Seg& g, int64_t kvh, const float* k, const float* v, uint32_t* kt2,
                 uint32_t* v2, int64_t hdp) {
  const int64_t HD = a.headDim, ld = a.numKvHeads * HD, hp = (HD + 1) / 2;
  for (int64_t t = 0; t < g.nkp; t += KT) {
    uint32_t* tile = kt2 + t * hp;
    for (int64_t jj = 0; jj < KT; ++jj) {
      const int64_t j = t + jj;
      if (j >= g.kLen) {
        for (int64_t p = 0; p < hp; ++p) tile[p * KT + jj] = 0;
        continue;
      }
      // 2·W values at a time rounded into W words, then stored down the tile's column jj
      const float* src = k + (g.kStart + j) * ld + kvh * HD;
      for (int64_t c = 0; c < HD; c += 2 * W) {
        uint32_t words[W];
        const int64_t nc = std::min<int64_t>(2 * W, HD - c);
        bf16PairsOf(src + c, nc, 1.f, words);
        for (int64_t p = 0; p < (nc + 1) / 2; ++p) tile[(c / 2 + p) * KT + jj] = words[p];
      }
    }
  }
  for (int64_t jp = 0; jp < g.nkp / 2; ++jp) {
    const int64_t j0 = 2 * jp, j1 = 2 * jp + 1;
    const float* r0 = j0 < g.kLen ? v + (g.kStart + j0) * ld + kvh * HD : nullptr;
    const float* r1 = j1 < g.kLen ? v + (g.kStart + j1) * ld + kvh * HD : nullptr;
    uint32_t* d = v2 + jp * hdp;
    int64_t c = 0;
    // word c = (bf16(r0[c]), bf16(r1[c])): 16 of each row rounded, widened and interleaved
    for (; r0 && r1 && c + W <= HD; c += W) {
      const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r0 + c)));
      const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(r1 + c)));
      _mm512_storeu_si512(d + c, _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
    for (; c < hdp; ++c) {
      const bool in = c < HD;
      d[c] = bf16Pair(r0 && in ? r0[c] : 0.f, r1 && in ? r1[c] : 0.f);
    }
  }
}

// Rows of head h of q (Nq, H, HD) times mult as bf16 pairs, (bqPad, hp) words, zero padded.
inline void loadRowsBf16(const AttnShape& a, const float* x, int64_t i0, int64_t bq, int64_t bqPad, int64_t h,
                         float mult, uint32_t* dst, int64_t hp) {
  const int64_t HD = a.headDim;
  for (int64_t r = 0; r < bqPad; ++r) {
    uint32_t* d = dst + r * hp;
    if (r >= bq) {
      std::memset(d, 0, sizeof(uint32_t) * static_cast<size_t>(hp));
      continue;
    }
    bf16PairsOf(x + ((i0 + r) * a.numHeads + h) * HD, HD, mult, d);
  }
}

// s[r, 0:KT) = Σ_p a[r, p] · kt[p, 0:KT) over bf16 pairs,  r < R.
template <int R>
MOR_INLINE void kernQKBf16(int64_t hp, const uint32_t* MOR_RESTRICT a, int64_t lda, const uint32_t* MOR_RESTRICT kt,
                           float* MOR_RESTRICT s, int64_t lds) {
  __m512 acc[R][2];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < hp; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(kt + p * KT);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(kt + p * KT + W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512bh ar = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * lda + p]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(s + r * lds, acc[r][0]);
    _mm512_storeu_ps(s + r * lds + W, acc[r][1]);
  }
}

// out[r, 0:NV·W) = Σ_{jp<np} p[r, jp] · v2[jp, 0:NV·W) over bf16 pairs of keys,  r < R.
template <int R, int NV>
MOR_INLINE void kernPVBf16(int64_t np, const uint32_t* MOR_RESTRICT p, int64_t ldp, const uint32_t* MOR_RESTRICT v2,
                           int64_t ldv, float* MOR_RESTRICT out, int64_t ldo) {
  __m512 acc[R][NV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_setzero_ps();
  for (int64_t jp = 0; jp < np; ++jp) {
    __m512bh vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) vv[c] = (__m512bh)_mm512_loadu_si512(v2 + jp * ldv + c * W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512bh pr = (__m512bh)_mm512_set1_epi32(static_cast<int>(p[r * ldp + jp]));
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], pr, vv[c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) _mm512_storeu_ps(out + r * ldo + c * W, acc[r][c]);
}

// scoreBlock over bf16 pairs (q2: (bqPad, hp) words, kt2 from packSegBf16).
inline void scoreBlockBf16(int64_t hp, const uint32_t* q2, const uint32_t* kt2, const int32_t* nv, int64_t bq,
                           float* S, int64_t keP) {
  scoreTiles(nv, bq, [&](auto R, int64_t rg, int64_t t) {
    kernQKBf16<decltype(R)::value>(hp, q2 + rg * hp, hp, kt2 + t * hp, S + rg * keP + t, keP);
  });
}

// valueBlock over bf16 pairs: P2 (bq rows of ldp words: the probabilities' pairs), v2 from packSegBf16.
inline void valueBlockBf16(int64_t hdv, const uint32_t* P2, int64_t ldp, const uint32_t* v2, int64_t hdp,
                           const int32_t* nv, int64_t bq, float* out, int64_t ldo) {
  for (int64_t rg = 0; rg < bq; rg += RPV) {
    int64_t ke = 0;
    const int64_t rows = std::min<int64_t>(RPV, bq - rg);
    for (int64_t r = rg; r < rg + rows; ++r) ke = std::max<int64_t>(ke, nv[r]);
    const int64_t np = (ke + 1) / 2;  // an odd prefix's last pair holds a zero probability
    for (int64_t c = 0; c < hdv; c += NVMAX) {
      const int64_t nvec = std::min<int64_t>(NVMAX, hdv - c);
      const uint32_t* p = P2 + rg * ldp;
      const uint32_t* vc = v2 + c * W;
      float* o = out + rg * ldo + c * W;
#define MOR_PV_BF16(R)                                                   \
  switch (nvec) {                                                        \
    case 1: kernPVBf16<R, 1>(np, p, ldp, vc, hdp, o, ldo); break;        \
    case 2: kernPVBf16<R, 2>(np, p, ldp, vc, hdp, o, ldo); break;        \
    case 3: kernPVBf16<R, 3>(np, p, ldp, vc, hdp, o, ldo); break;        \
    default: kernPVBf16<R, NVMAX>(np, p, ldp, vc, hdp, o, ldo); break;   \
  }
      if (rows > 2) {
        MOR_PV_BF16(RPV)
      } else if (rows == 2) {
        MOR_PV_BF16(2)
      } else {
        MOR_PV_BF16(1)
      }
#undef MOR_PV_BF16
    }
  }
}

// Row r of S (keP floats, zero past its visible prefix) as bf16 pairs: P2 row (keP / 2 words).
inline void probsToBf16(const float* S, int64_t keP, int64_t rows, uint32_t* P2) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = S + r * keP;
    uint32_t* d = P2 + r * (keP / 2);
    for (int64_t j = 0; j < keP; j += 2 * W) {
      const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + j + W), _mm512_loadu_ps(src + j));
      _mm512_storeu_si512(d + j / 2, (__m512i)b);
    }
  }
}
#endif  // MOR_BF16_DOT

// S block (bqPad, keP) = Qblk · Kᵀ over the tiles each row group needs (see scoreTiles).
inline void scoreBlock(int64_t hd, const float* qb, int64_t hdp, const float* ktt, const int32_t* nv, int64_t bq,
                       float* S, int64_t keP) {
  scoreTiles(nv, bq, [&](auto R, int64_t rg, int64_t t) {
    kernQK<decltype(R)::value>(hd, qb + rg * hdp, hdp, ktt + t * hd, S + rg * keP + t, keP);
  });
}

// out rows [0, bq) (stride ldo) = P (rows of ldp) · v rows (stride ldv), each row group over its
// visible prefix.
inline void valueBlock(int64_t hdv, const float* P, int64_t ldp, const float* v, int64_t ldv, const int32_t* nv,
                       int64_t bq, float* out, int64_t ldo) {
  for (int64_t rg = 0; rg < bq; rg += RPV) {
    int64_t ke = 0;
    const int64_t rows = std::min<int64_t>(RPV, bq - rg);
    for (int64_t r = rg; r < rg + rows; ++r) ke = std::max<int64_t>(ke, nv[r]);
    if (rows > 2)
      productRows<RPV, false>(hdv, ke, P + rg * ldp, ldp, 1, v, ldv, out + rg * ldo, ldo);
    else if (rows == 2)
      productRows<2, false>(hdv, ke, P + rg * ldp, ldp, 1, v, ldv, out + rg * ldo, ldo);
    else
      productRows<1, false>(hdv, ke, P + rg * ldp, ldp, 1, v, ldv, out + rg * ldo, ldo);
  }
}

// s[r, j] = ⟨qb[r], k_j⟩ for j < n, r < R, k_j = k + j·ldk read in place (HD = hdv vectors).
// Decoding: the few query rows share each key's loads; no Kᵀ packing.
template <int R>
void scoreDirect(int64_t hdv, const float* qb, int64_t ldq, const float* k, int64_t ldk, int64_t n, float* S,
                 int64_t lds) {
  for (int64_t j = 0; j < n; ++j) {
    const float* kj = k + j * ldk;
    vf acc[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = vf{};
    for (int64_t c = 0; c < hdv; ++c) {
      const vf kv = vload(kj + c * W);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] += vload(qb + r * ldq + c * W) * kv;
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) S[r * lds + j] = vhsum(acc[r]);
  }
}

// Max over the first n entries of a row.
inline float rowMax(const float* x, int64_t n) {
  int64_t j = 0;
  float m = kNegInf;
  if (n >= W) {
    vf vm = vload(x);
    for (j = W; j + W <= n; j += W) vm = vmax(vm, vload(x + j));
    m = vhmax(vm);
  }
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// x[j] = exp(x[j] - sub) for j < n; returns the sum (float).
inline float expRow(float* x, int64_t n, float sub) {
  const vf vs = vset1(sub);
  vf acc = vf{};
  int64_t j = 0;
  for (; j + W <= n; j += W) {
    vf e = vexp(vload(x + j) - vs);
    vstore(x + j, e);
    acc += e;
  }
  float s = vhsum(acc);
  for (; j < n; ++j) {
    float e = sexp(x[j] - sub);
    x[j] = e;
    s += e;
  }
  return s;
}

inline void zeroTail(float* x, int64_t from, int64_t to) {
  if (to > from) std::memset(x + from, 0, sizeof(float) * static_cast<size_t>(to - from));
}

// Forward of a direct segment for kv head kvh: its rows are (query i, head h of the group), at
// most kDirectRows, scored against K rows in place and multiplied with V rows in place.
void decodeTask(const AttnShape& a, const Plan& pl, const Seg& g, int64_t kvh, const float* q, const float* k,
                const float* v, float* out, float* lse) {
  const int64_t HD = a.headDim, H = a.numHeads, group = H / a.numKvHeads, hdv = HD / W;
  const int64_t rows = g.qLen * group;
  const int64_t R = rows > 4 ? 8 : rows > 2 ? 4 : rows;  // kernel rows (padding rows are zero)
  int32_t nv[kDirectRows] = {};
  int64_t ke = 0;
  float* qb = scratch(9, static_cast<size_t>(kDirectRows * HD));
  for (int64_t r = 0; r < R; ++r) {
    float* d = qb + r * HD;
    if (r < rows) {
      const int64_t i = g.qStart + r / group, h = kvh * group + r % group;
      nv[r] = pl.nvis[static_cast<size_t>(i)];
      ke = std::max<int64_t>(ke, nv[r]);
      const float* src = q + (i * H + h) * HD;
      for (int64_t c = 0; c < HD; ++c) d[c] = src[c] * a.scale;
    } else {
      std::memset(d, 0, sizeof(float) * static_cast<size_t>(HD));
    }
  }
  const int64_t lds = std::max<int64_t>(roundUp(ke, W), W);
  float* S = scratch(10, static_cast<size_t>(R * lds));
  float* ob = scratch(11, static_cast<size_t>(R * HD));
  const int64_t ldk = a.numKvHeads * HD;
  const float* kb = k + g.kStart * ldk + kvh * HD;
  const float* vb = v + g.kStart * ldk + kvh * HD;
  switch (R) {
    case 1: scoreDirect<1>(hdv, qb, HD, kb, ldk, ke, S, lds); break;
    case 2: scoreDirect<2>(hdv, qb, HD, kb, ldk, ke, S, lds); break;
    case 4: scoreDirect<4>(hdv, qb, HD, kb, ldk, ke, S, lds); break;
    default: scoreDirect<8>(hdv, qb, HD, kb, ldk, ke, S, lds); break;
  }
  float inv[kDirectRows] = {};
  float lrow[kDirectRows];
  for (int64_t r = 0; r < rows; ++r) {
    float* row = S + r * lds;
    const int64_t n = nv[r];
    if (n == 0) {
      zeroTail(row, 0, ke);
      lrow[r] = kNegInf;
      continue;
    }
    const float m = rowMax(row, n);
    const float sum = expRow(row, n, m);
    zeroTail(row, n, ke);
    inv[r] = 1.f / sum;
    lrow[r] = m + std::log(sum);
  }
  valueBlock(hdv, S, lds, vb, ldk, nv, rows, ob, HD);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i = g.qStart + r / group, h = kvh * group + r % group;
    float* o = out + (i * H + h) * HD;
    const float* src = ob + r * HD;
    for (int64_t c = 0; c < HD; ++c) o[c] = src[c] * inv[r];
    lse[i * H + h] = lrow[r];
  }
}

}  // namespace

void attentionValidate(const AttnShape& a) {
  auto fail = [](const std::string& m) { throw KernelError(ErrKind::Argument, "attention: " + m); };
  if (a.numHeads < 1 || a.numKvHeads < 1 || a.headDim < 1)
    fail("numHeads, numKvHeads and headDim must be ≥ 1");
  if (a.numHeads % a.numKvHeads != 0)
    fail("numHeads (" + std::to_string(a.numHeads) + ") must be a multiple of numKvHeads (" +
         std::to_string(a.numKvHeads) + ")");
  std::vector<std::pair<int64_t, int64_t>> qr, kr;
  for (int64_t s = 0; s < a.numSegments; ++s) {
    const int64_t qs = a.segments[4 * s], ql = a.segments[4 * s + 1], ks = a.segments[4 * s + 2],
                  kl = a.segments[4 * s + 3];
    const std::string at = "segment " + std::to_string(s) + " [" + std::to_string(qs) + ", " + std::to_string(ql) +
                           ", " + std::to_string(ks) + ", " + std::to_string(kl) + "]";
    if (qs < 0 || ql < 0 || ks < 0 || kl < 0) fail(at + " has a negative entry");
    if (qs + ql > a.nq) fail(at + " query rows run past Nq = " + std::to_string(a.nq));
    if (ks + kl > a.nk) fail(at + " key rows run past Nk = " + std::to_string(a.nk));
    for (int64_t j = ks + 1; j < ks + kl; ++j)
      if (a.kPos[j] < a.kPos[j - 1])
        fail(at + ": kPos must be non-decreasing within a segment (kPos[" + std::to_string(j) +
             "] = " + std::to_string(a.kPos[j]) + " < kPos[" + std::to_string(j - 1) +
             "] = " + std::to_string(a.kPos[j - 1]) + ")");
    if (ql > 0) qr.emplace_back(qs, qs + ql);
    if (kl > 0) kr.emplace_back(ks, ks + kl);
  }
  std::sort(qr.begin(), qr.end());
  std::sort(kr.begin(), kr.end());
  for (size_t i = 1; i < qr.size(); ++i)
    if (qr[i].first < qr[i - 1].second) fail("query ranges of two segments overlap");
  for (size_t i = 1; i < kr.size(); ++i)
    if (kr[i].first < kr[i - 1].second) fail("key ranges of two segments overlap");
}

namespace {

// attentionForward; bf16Dot: K and V hold bf16 values and the dense blocks run on vdpbf16ps (see
// attentionForwardBf16), which only a MOR_BF16_DOT variant asks for.
void attentionForwardImpl(const AttnShape& a, const float* q, const float* k, const float* v, float* out, float* lse,
                          bool bf16Dot) {
  attentionValidate(a);
  const Plan pl = makePlan(a, false);
  [[maybe_unused]] const int64_t hp = (a.headDim + 1) / 2;  // bf16 pairs of the head dim (bf16Dot)
  const int64_t HD = a.headDim, H = a.numHeads, KVH = a.numKvHeads, hdp = pl.hdp, hdv = hdp / W;
  const int64_t group = H / KVH;

  // Rows outside every segment: out 0, lse -inf. Rows with no visible key get the same below.
  for (int64_t i = 0; i < a.nq; ++i)
    if (!pl.covered[static_cast<size_t>(i)]) {
      std::memset(out + i * H * HD, 0, sizeof(float) * static_cast<size_t>(H * HD));
      for (int64_t h = 0; h < H; ++h) lse[i * H + h] = kNegInf;
    }
  if (pl.tasks.empty() && a.numSegments == 0) return;

  float* packs = scratch(8, static_cast<size_t>(std::max<int64_t>(pl.packFloats, 1)));
  const int64_t nPack = a.numSegments * KVH;
  double work = 0;
  for (const Seg& g : pl.segs) work += 2.0 * g.qLen * g.kLen * HD * H;
  const int threads = threadsFor(work, 2.0e5);

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
#pragma omp for schedule(static)
    for (int64_t t = 0; t < nPack; ++t) {
      const Seg& g = pl.segs[static_cast<size_t>(t / KVH)];
      const int64_t kvh = t % KVH;
      if (g.direct) continue;
      float* base = packs + g.packOff + kvh * g.packStride;
#ifdef MOR_BF16_DOT
      if (bf16Dot) {
        uint32_t* kt2 = reinterpret_cast<uint32_t*>(base);
        packSegBf16(a, g, kvh, k, v, kt2, kt2 + g.nkp * hp, hdp);
        continue;
      }
#endif
      packSeg(a, g, kvh, k, v, base, base + g.nkp * HD, hdp);
    }

#pragma omp for schedule(dynamic, 1)
    for (size_t ti = 0; ti < pl.tasks.size(); ++ti) {
      const Task& tk = pl.tasks[ti];
      const Seg& g = pl.segs[static_cast<size_t>(tk.seg)];
      if (tk.block < 0) {
        decodeTask(a, pl, g, tk.head, q, k, v, out, lse);
        continue;
      }
      const int64_t h = tk.head, kvh = h / group;
      const int64_t i0 = g.qStart + static_cast<int64_t>(tk.block) * BQ;
      const int64_t bq = std::min<int64_t>(BQ, g.qStart + g.qLen - i0);
      const int64_t bqPad = roundUp(bq, RQK);
      const int32_t* nv = pl.nvis.data() + i0;
      int64_t blockKe = 0;
      for (int64_t r = 0; r < bq; ++r) blockKe = std::max<int64_t>(blockKe, nv[r]);
      const int64_t keP = std::max<int64_t>(roundUp(blockKe, KT), KT);
      const float* base = packs + g.packOff + kvh * g.packStride;
      const float* ktt = base;
      const float* vp = base + g.nkp * HD;

      float* qb = scratch(9, static_cast<size_t>(bqPad * hdp));
      float* S = scratch(10, static_cast<size_t>(bqPad * keP));
      float* ob = scratch(11, static_cast<size_t>(bqPad * hdp));
      float inv[BQ];

#ifdef MOR_BF16_DOT
      uint32_t* q2 = nullptr;
      if (bf16Dot) {
        q2 = reinterpret_cast<uint32_t*>(scratch(2, static_cast<size_t>(bqPad * hp)));
        loadRowsBf16(a, q, i0, bq, bqPad, h, a.scale, q2, hp);
        scoreBlockBf16(hp, q2, reinterpret_cast<const uint32_t*>(ktt), nv, bq, S, keP);
      } else
#endif
      {
        loadRows(a, q, i0, bq, bqPad, h, a.scale, qb, hdp);
        scoreBlock(HD, qb, hdp, ktt, nv, bq, S, keP);
      }
      for (int64_t r = 0; r < bqPad; ++r) {
        float* row = S + r * keP;
        const int64_t n = r < bq ? nv[r] : 0;
        if (n == 0) {
          zeroTail(row, 0, keP);
          if (r < bq) {
            inv[r] = 0.f;
            lse[(i0 + r) * H + h] = kNegInf;
          }
          continue;
        }
        const float m = rowMax(row, n);
        const float sum = expRow(row, n, m);
        zeroTail(row, n, keP);
        inv[r] = 1.f / sum;
        lse[(i0 + r) * H + h] = m + std::log(sum);
      }
#ifdef MOR_BF16_DOT
      if (bf16Dot) {
        uint32_t* P2 = reinterpret_cast<uint32_t*>(scratch(3, static_cast<size_t>(bqPad * keP / 2)));
        probsToBf16(S, keP, bqPad, P2);
        valueBlockBf16(hdv, P2, keP / 2, reinterpret_cast<const uint32_t*>(ktt) + g.nkp * hp, hdp, nv, bq, ob, hdp);
      } else
#endif
        valueBlock(hdv, S, keP, vp, hdp, nv, bq, ob, hdp);
      for (int64_t r = 0; r < bq; ++r) {
        float* o = out + ((i0 + r) * H + h) * HD;
        const float* src = ob + r * hdp;
        const float s = inv[r];
        for (int64_t c = 0; c < HD; ++c) o[c] = src[c] * s;
      }
    }
  }
}

}  // namespace

void attentionForward(const AttnShape& a, const float* q, const float* k, const float* v, float* out, float* lse) {
  attentionForwardImpl(a, q, k, v, out, lse, false);
}

void roundedToBf16(const float* src, int64_t n, float* dst) {
  int64_t i = 0;
#ifdef MOR_BF16_DOT
  for (; i + W <= n; i += W) {
    const __m512i b = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    _mm512_storeu_si512(dst + i, _mm512_slli_epi32(b, 16));
  }
#endif
  for (; i < n; ++i) dst[i] = bf16ToF32(f32ToBf16(src[i]));
}

void attentionForwardBf16(const AttnShape& a, const float* q, const float* k, const float* v, float* out, float* lse) {
#ifdef MOR_BF16_DOT
  attentionForwardImpl(a, q, k, v, out, lse, true);
#else
  attentionForwardImpl(a, q, k, v, out, lse, false);
#endif
}

namespace {

struct BwdCtx {
  const AttnShape* a;
  const Plan* pl;
  const float *q, *out, *lse, *dOut, *packs;
  float* dQ;
};

// Backward of one task (segment g, head h, query block): writes its dQ rows and accumulates the
// block's contributions to dK/dV into dkAcc/dvAcc, whose row r (stride ldAcc) is key g.kStart + r.
// dkAcc/dvAcc need RTK spare rows past the segment's last key (they receive exact zeros).
void backwardBlock(const BwdCtx& c, const Seg& g, int64_t h, int64_t block, float* dkAcc, float* dvAcc,
                   int64_t ldAcc) {
  const AttnShape& a = *c.a;
  const int64_t HD = a.headDim, H = a.numHeads, hdp = c.pl->hdp, hdv = hdp / W;
  const int64_t kvh = h / (H / a.numKvHeads);
  const int64_t i0 = g.qStart + block * BQ;
  const int64_t bq = std::min<int64_t>(BQ, g.qStart + g.qLen - i0);
  const int64_t bqPad = roundUp(bq, RQK);
  const int32_t* nv = c.pl->nvis.data() + i0;
  int64_t blockKe = 0;
  bool sorted = true;
  for (int64_t r = 0; r < bq; ++r) {
    blockKe = std::max<int64_t>(blockKe, nv[r]);
    if (r > 0 && nv[r] < nv[r - 1]) sorted = false;
  }
  if (blockKe == 0) {
    for (int64_t r = 0; r < bq; ++r)
      std::memset(c.dQ + ((i0 + r) * H + h) * HD, 0, sizeof(float) * static_cast<size_t>(HD));
    return;
  }
  const int64_t keP = roundUp(blockKe, KT);
  const float* base = c.packs + g.packOff + kvh * g.packStride;
  const float* ktt = base;
  const float* kp = base + g.nkp * HD;
  const float* vtt = kp + g.nkp * hdp;

  float* qb = scratch(9, static_cast<size_t>(bqPad * hdp));
  float* dob = scratch(13, static_cast<size_t>(bqPad * hdp));
  float* S = scratch(10, static_cast<size_t>(bqPad * keP));
  float* dP = scratch(14, static_cast<size_t>(bqPad * keP));
  float* dq = scratch(11, static_cast<size_t>(bqPad * hdp));
  float Dr[BQ];

  loadRows(a, c.q, i0, bq, bqPad, h, a.scale, qb, hdp);
  loadRows(a, c.dOut, i0, bq, bqPad, h, 1.f, dob, hdp);
  for (int64_t r = 0; r < bq; ++r) {
    const float* o = c.out + ((i0 + r) * H + h) * HD;
    const float* d = dob + r * hdp;
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t cc = 0; cc < HD; ++cc) s += o[cc] * d[cc];
    Dr[r] = s;
  }
  scoreBlock(HD, qb, hdp, ktt, nv, bq, S, keP);
  scoreBlock(HD, dob, hdp, vtt, nv, bq, dP, keP);
  // P = exp(S − lse) (into S), dS = P ∘ (dP − D) (into dP); zero past each row's prefix.
  for (int64_t r = 0; r < bqPad; ++r) {
    float* srow = S + r * keP;
    float* drow = dP + r * keP;
    int64_t n = r < bq ? nv[r] : 0;
    const float L = n > 0 ? c.lse[(i0 + r) * H + h] : 0.f;
    if (L == kNegInf) n = 0;  // the forward saw no key for this row: no gradient
    if (n > 0) {
      const vf vL = vset1(L), vD = vset1(Dr[r]);
      int64_t j = 0;
      for (; j + W <= n; j += W) {
        const vf p = vexp(vload(srow + j) - vL);
        vstore(srow + j, p);
        vstore(drow + j, p * (vload(drow + j) - vD));
      }
      for (; j < n; ++j) {
        const float p = sexp(srow[j] - L);
        srow[j] = p;
        drow[j] = p * (drow[j] - Dr[r]);
      }
    }
    zeroTail(srow, n, keP);
    zeroTail(drow, n, keP);
  }
  // dQ = scale · dS · K
  valueBlock(hdv, dP, keP, kp, hdp, nv, bq, dq, hdp);
  for (int64_t r = 0; r < bq; ++r) {
    float* o = c.dQ + ((i0 + r) * H + h) * HD;
    const float* src = dq + r * hdp;
    for (int64_t cc = 0; cc < HD; ++cc) o[cc] = src[cc] * a.scale;
  }
  // dK += dSᵀ · (scale·Q),  dV += Pᵀ · dO, over the keys this block sees; rows of the block that
  // see none of a key group are skipped when the visible counts are sorted (the usual case).
  int64_t iStart = 0;
  for (int64_t j0 = 0; j0 < blockKe; j0 += RTK) {
    if (sorted)
      while (iStart < bq && nv[iStart] <= j0) ++iStart;
    const int64_t rows = bq - iStart;  // padding rows hold zeros: skip them
    productRows<RTK, true>(hdv, rows, dP + iStart * keP + j0, 1, keP, qb + iStart * hdp, hdp, dkAcc + j0 * ldAcc,
                           ldAcc);
    productRows<RTK, true>(hdv, rows, S + iStart * keP + j0, 1, keP, dob + iStart * hdp, hdp, dvAcc + j0 * ldAcc,
                           ldAcc);
  }
}

}  // namespace

void attentionBackward(const AttnShape& a, const float* q, const float* k, const float* v, const float* out,
                       const float* lse, const float* dOut, float* dQ, float* dK, float* dV) {
  attentionValidate(a);
  const Plan pl = makePlan(a, true);
  const int64_t HD = a.headDim, H = a.numHeads, KVH = a.numKvHeads, hdp = pl.hdp;
  const int64_t group = H / KVH;

  for (int64_t i = 0; i < a.nq; ++i)
    if (!pl.covered[static_cast<size_t>(i)])
      std::memset(dQ + i * H * HD, 0, sizeof(float) * static_cast<size_t>(H * HD));

  double work = 0;
  for (const Seg& g : pl.segs) work += 2.0 * g.qLen * g.kLen * HD * H;
  const int threads = threadsFor(work, 1.0e5);
  float* packs = scratch(8, static_cast<size_t>(std::max<int64_t>(pl.packFloats, 1)));
  const int64_t nPack = a.numSegments * KVH;
  const BwdCtx ctx{&a, &pl, q, out, lse, dOut, packs, dQ};

  // Two ways to keep dK/dV race-free:
  //  owner:   one task per (segment, kv head) runs all its heads and query blocks and owns those
  //           dK/dV rows (accumulated in a small padded buffer). Used when there are enough such
  //           tasks to balance the threads (or one thread).
  //  private: tasks are (segment, head, query block); each thread accumulates into its own padded
  //           copy of dK/dV, summed at the end. Used when (segment, kv head) pairs are too few.
  int64_t maxKeys = 0;
  for (const Seg& g : pl.segs) maxKeys = std::max(maxKeys, g.kLen);
  const bool owner = threads <= 1 || nPack >= 4 * threads;

  // Key rows outside every segment get 0.
  {
    std::vector<uint8_t> kcov(static_cast<size_t>(a.nk), 0);
    for (const Seg& g : pl.segs)
      for (int64_t j = g.kStart; j < g.kStart + g.kLen; ++j) kcov[static_cast<size_t>(j)] = 1;
    for (int64_t j = 0; j < a.nk; ++j)
      if (!kcov[static_cast<size_t>(j)]) {
        std::memset(dK + j * KVH * HD, 0, sizeof(float) * static_cast<size_t>(KVH * HD));
        std::memset(dV + j * KVH * HD, 0, sizeof(float) * static_cast<size_t>(KVH * HD));
      }
  }

  const int64_t privFloats = owner ? 0 : (a.nk + RTK) * KVH * hdp;
  float* privAll = owner ? nullptr : scratch(12, static_cast<size_t>(std::max<int64_t>(2 * privFloats * threads, 1)));
  const int64_t ldPriv = KVH * hdp;

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int tid = threadId();
    const int team = teamSize();

#pragma omp for schedule(static)
    for (int64_t t = 0; t < nPack; ++t) {
      const Seg& g = pl.segs[static_cast<size_t>(t / KVH)];
      const int64_t kvh = t % KVH;
      float* base = packs + g.packOff + kvh * g.packStride;
      float* ktt = base;
      float* kp = base + g.nkp * HD;
      float* vtt = kp + g.nkp * hdp;
      packSeg(a, g, kvh, k, k, ktt, kp, hdp);
      const int64_t ld = KVH * HD;
      for (int64_t t0 = 0; t0 < g.nkp; t0 += KT) {
        float* tile = vtt + t0 * HD;
        for (int64_t jj = 0; jj < KT; ++jj) {
          const int64_t j = t0 + jj;
          if (j < g.kLen) {
            const float* src = v + (g.kStart + j) * ld + kvh * HD;
            for (int64_t d = 0; d < HD; ++d) tile[d * KT + jj] = src[d];
          } else {
            for (int64_t d = 0; d < HD; ++d) tile[d * KT + jj] = 0.f;
          }
        }
      }
    }

    if (owner) {
      // Biggest segments first.
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < nPack; ++t) {
        const Seg& g = pl.segs[static_cast<size_t>(t / KVH)];
        const int64_t kvh = t % KVH;
        const int64_t rows = g.kLen + RTK;
        float* acc = scratch(15, static_cast<size_t>(2 * rows * hdp));
        float* dkAcc = acc;
        float* dvAcc = acc + rows * hdp;
        std::memset(acc, 0, sizeof(float) * static_cast<size_t>(2 * rows * hdp));
        for (int64_t b = g.blocks - 1; b >= 0; --b)
          for (int64_t h = kvh * group; h < (kvh + 1) * group; ++h) backwardBlock(ctx, g, h, b, dkAcc, dvAcc, hdp);
        for (int64_t j = 0; j < g.kLen; ++j) {
          std::memcpy(dK + ((g.kStart + j) * KVH + kvh) * HD, dkAcc + j * hdp, sizeof(float) * static_cast<size_t>(HD));
          std::memcpy(dV + ((g.kStart + j) * KVH + kvh) * HD, dvAcc + j * hdp, sizeof(float) * static_cast<size_t>(HD));
        }
      }
    } else {
      float* pdK = privAll + 2 * privFloats * tid;
      float* pdV = pdK + privFloats;
      std::memset(pdK, 0, sizeof(float) * static_cast<size_t>(2 * privFloats));
#pragma omp for schedule(dynamic, 1)
      for (size_t ti = 0; ti < pl.tasks.size(); ++ti) {
        const Task& tk = pl.tasks[ti];
        const Seg& g = pl.segs[static_cast<size_t>(tk.seg)];
        const int64_t kvh = tk.head / group;
        backwardBlock(ctx, g, tk.head, tk.block, pdK + (g.kStart * KVH + kvh) * hdp,
                      pdV + (g.kStart * KVH + kvh) * hdp, ldPriv);
      }
      // dK, dV of the segments' key rows = Σ over threads of the private copies.
      for (const Seg& g : pl.segs) {
#pragma omp for schedule(static)
        for (int64_t row = g.kStart * KVH; row < (g.kStart + g.kLen) * KVH; ++row) {
          float* dk = dK + row * HD;
          float* dv = dV + row * HD;
          const float* s0 = privAll + row * hdp;
          for (int64_t cc = 0; cc < HD; ++cc) {
            dk[cc] = s0[cc];
            dv[cc] = s0[privFloats + cc];
          }
          for (int tt = 1; tt < team; ++tt) {
            const float* st = s0 + 2 * privFloats * tt;
            for (int64_t cc = 0; cc < HD; ++cc) {
              dk[cc] += st[cc];
              dv[cc] += st[privFloats + cc];
            }
          }
        }
      }
    }
  }
  (void)maxKeys;
}

// ---- attention over a paged KV pool (decoding) -------------------------------------------------
//
// Each query row i reads its own stream of pool slots through the block table (PagedShape). Tasks
// are query rows, or (query row, part of the stream) when there are too few rows to occupy the
// threads. A task gathers a chunk of visible slots (8-16 KB of K and V rows) and runs every kv
// head's group of H/KVH query heads over it while the chunk is in cache, so each K and V row is read from memory once
// for all heads, in place (no packing), with an online softmax per head:
//   S = (scale·q)·Kᵀ over the chunk;  m' = max(m, max S);  α = e^(m − m')
//   l = α·l + Σ e^(S − m');  acc = α·acc + e^(S − m')·V;  out = acc / l
// so the scratch per thread is O(H · HD + group · PC) whatever the stream length. Parts of a split
// stream leave (m, l, acc) in a shared buffer and are merged at the end. Each task writes only its
// own output rows (or its own partial), so there are no races.
namespace {

constexpr int PC = 128;            // most visible slots per chunk (the chunk buffers' size)
// K and V bytes of a chunk, so also how far ahead the pump prefetches (a chunk's rows are fetched
// while the chunk before computes). 32 rows from memory: 16 KB (16 slots of `small` in f32, 32 in
// bf16) ran 1.2-1.35x faster than 128 slots (64-128 KB ahead) at context 160 and 1.08-1.12x at
// 1,000, as a plain read of these blocks runs fastest 16 KB ahead; 8 KB was slower again. In
// cache it costs 0.92-0.99x (a chunk's fixed work: softmax rescale, pointers, pump set-up).
constexpr int64_t kChunkBytes = 16384;
// The chunk when no stream is split (every task a whole stream: a batch of query rows) on AVX2.
// Zen 3, pools cycled through 96 MB so the rows come from memory, as a decoding step reads them:
// 8 KB ran 1.07-1.18x faster than 16 KB at 4-32 query rows over 200-1,100 keys in f32 (blocks in
// stream order; 1.06-1.08x shuffled) and 1.06-1.07x in bf16. Where the pools stay in L3 it ran
// 0.91-0.98x (a decoding step's K/V, with its weights, does not stay there); split streams (1-2
// query rows) ran 0.92-0.98x, so those keep kChunkBytes, as AVX-512 does (16 KB measured best on
// Zen 4).
constexpr int64_t kChunkBytesWhole = W == 8 ? 8192 : kChunkBytes;
constexpr int PRS = 8;             // rows (heads of a group) per score kernel
constexpr int PRV = 4;             // rows per P·V kernel
// Fewest slots per part when a stream is split (128 ran one query over 100-1,000 slots 1.1-1.5x slower).
constexpr int64_t kMinPart = 32;

// Horizontal sum in registers, in vhsum's order. vhsum goes through memcpy of the halves, which
// here kept the score accumulators in memory (a store/reload on every FMA).
MOR_INLINE float hsumReg(vf v) {
#if (defined(__clang__) || __GNUC__ >= 12) && (MOR_VW == 16 || MOR_VW == 8)
  typedef float h4 __attribute__((vector_size(16)));
#if MOR_VW == 16
  typedef float h8 __attribute__((vector_size(32)));
  const h8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
#else
  const vf s8 = v;
#endif
  const h4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
#else
  return vhsum(v);
#endif
}

#if (defined(__clang__) || __GNUC__ >= 12) && (MOR_VW == 16 || MOR_VW == 8)
#define MOR_PAGED_SUMW 1
// Lane k of the result = the sum of the lanes of in[k], k < W: a shuffle tree (log2 W levels of
// two shuffles and an add per pair), ~3 operations per sum instead of ~9 for a horizontal sum each.
MOR_INLINE vf sumLanesW(const vf* in) {
#if MOR_VW == 16
  vf s1[8], s2[4], s3[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)  // s1[i]: lanes 0–7 partial sums of in[i], 8–15 of in[i+8]
    s1[i] = __builtin_shufflevector(in[i], in[i + 8], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
            __builtin_shufflevector(in[i], in[i + 8], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)  // s2[i]: 4-lane groups of in[i], in[i+4], in[i+8], in[i+12]
    s2[i] = __builtin_shufflevector(s1[i], s1[i + 4], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
            __builtin_shufflevector(s1[i], s1[i + 4], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)  // s3[i]: 2-lane groups of in[i], in[i+2], ..., in[i+14]
    s3[i] = __builtin_shufflevector(s2[i], s2[i + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
            __builtin_shufflevector(s2[i], s2[i + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  return __builtin_shufflevector(s3[0], s3[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
         __builtin_shufflevector(s3[0], s3[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
#else
  vf s1[4], s2[2];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)  // s1[i]: lanes 0–3 partial sums of in[i], 4–7 of in[i+4]
    s1[i] = __builtin_shufflevector(in[i], in[i + 4], 0, 1, 2, 3, 8, 9, 10, 11) +
            __builtin_shufflevector(in[i], in[i + 4], 4, 5, 6, 7, 12, 13, 14, 15);
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)  // s2[i]: 2-lane groups of in[i], in[i+2], in[i+4], in[i+6]
    s2[i] = __builtin_shufflevector(s1[i], s1[i + 2], 0, 1, 8, 9, 4, 5, 12, 13) +
            __builtin_shufflevector(s1[i], s1[i + 2], 2, 3, 10, 11, 6, 7, 14, 15);
  return __builtin_shufflevector(s2[0], s2[1], 0, 8, 2, 10, 4, 12, 6, 14) +
         __builtin_shufflevector(s2[0], s2[1], 1, 9, 3, 11, 5, 13, 7, 15);
#endif
}
#endif


// Prefetches of the rows the task reads next (the next chunk, or the next task's first chunk),
// issued a few lines at a time from inside the score and P·V loops of the current chunk, so the
// reads overlap its arithmetic. A burst of a whole chunk's prefetches before the arithmetic
// filled the core's miss queue and stalled the loads behind it until most of them had arrived.
struct PrefetchPump {
  const char* k = nullptr;  // K pool, V pool (bytes)
  const char* v = nullptr;
  int64_t rowBytes = 0;     // bytes of a pool row (every kv head)
  int64_t lines = 0;        // cache lines per row
  const int64_t* slots = nullptr;
  int n = 0;                // slots to prefetch
  int x = 0;                // the next slot, and its next line
  int64_t c = 0;
  int per = 1;              // line pairs (K and V) per step
  MOR_INLINE void step() {
    for (int t = 0; t < per && x < n; ++t) {
      const int64_t off = slots[x] * rowBytes + c * 64;
      __builtin_prefetch(k + off, 0, 2);
      __builtin_prefetch(v + off, 0, 2);
      if (++c == lines) {
        c = 0;
        ++x;
      }
    }
  }
  void drain() {
    while (x < n) step();
  }
};

template <int R, int U>
struct Lanes {
  vf a[R][U];
};

// a[r][u] = Σ_c q_r[c·W : (c+1)·W] ⊙ k_u[c·W : (c+1)·W]: per-lane partial dot products of R query
// rows with U key rows, U·R independent FMA chains (one chain per slot was latency-bound). NV > 0:
// the head dim is NV vectors and the query rows are in registers (qv); NV = 0: hdv vectors, the
// query rows read from q (stride ldq).
template <int R, int U, int NV, typename T>
MOR_INLINE Lanes<R, U> dotLanes(int64_t hdv, const float* MOR_RESTRICT q, int64_t ldq, const vf (*qv)[NV > 0 ? NV : 1],
                                const T* const* k) {
  Lanes<R, U> x;
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) x.a[r][u] = vf{};
  const int64_t nv = NV > 0 ? NV : hdv;
#pragma GCC unroll 4
  for (int64_t c = 0; c < nv; ++c) {
    vf kv[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      kv[u] = vloadT(k[u] + c * W);
      if (R > 1) MOR_PIN(kv[u]);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const vf qr = NV > 0 ? qv[r][c] : vload(q + r * ldq + c * W);
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) x.a[r][u] += qr * kv[u];
    }
  }
  return x;
}

// s[r·lds + j] = ⟨q_r, k_j⟩ over the full vectors of the head dim (hdv·W floats), r < R, j < n;
// q rows stride ldq, k_j = krow[j] read in place, U slots at a time (NV as in dotLanes). The rest
// of the head dim, when W does not divide it, is added by pagedScoreTail. With MOR_PAGED_SUMW, W
// slots' accumulators are reduced together and s rows must have room for n rounded up to W.
template <int R, int U, int NV, typename T>
void pagedScores(int64_t hdv, const float* MOR_RESTRICT q, int64_t ldq, const T* const* krow, int64_t n,
                 float* MOR_RESTRICT s, int64_t lds, PrefetchPump& pf) {
  vf qv[R][NV > 0 ? NV : 1];
  if (NV > 0) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) {
        qv[r][c] = vload(q + r * ldq + c * W);
        MOR_PIN(qv[r][c]);
      }
  }
#ifdef MOR_PAGED_SUMW
  static_assert(W % U == 0, "U must divide W");
  vf part[R][W];
  for (int64_t j0 = 0; j0 < n; j0 += W) {
    const int64_t cnt = std::min<int64_t>(W, n - j0);
    int64_t jj = 0;
    for (; jj + U <= cnt; jj += U) {
      pf.step();
      const Lanes<R, U> x = dotLanes<R, U, NV>(hdv, q, ldq, qv, krow + j0 + jj);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) part[r][jj + u] = x.a[r][u];
    }
    for (; jj < cnt; ++jj) {
      const Lanes<R, 1> x = dotLanes<R, 1, NV>(hdv, q, ldq, qv, krow + j0 + jj);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) part[r][jj] = x.a[r][0];
    }
    for (; jj < W; ++jj)
      for (int r = 0; r < R; ++r) part[r][jj] = vf{};
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) vstore(s + r * lds + j0, sumLanesW(part[r]));
  }
#else
  int64_t j = 0;
  for (; j + U <= n; j += U) {
    pf.step();
    const Lanes<R, U> x = dotLanes<R, U, NV>(hdv, q, ldq, qv, krow + j);
    for (int r = 0; r < R; ++r)
      for (int u = 0; u < U; ++u) s[r * lds + j + u] = hsumReg(x.a[r][u]);
  }
  for (; j < n; ++j) {
    const Lanes<R, 1> x = dotLanes<R, 1, NV>(hdv, q, ldq, qv, krow + j);
    for (int r = 0; r < R; ++r) s[r * lds + j] = hsumReg(x.a[r][0]);
  }
#endif
}

// s[r·lds + j] += Σ_{d0 ≤ d < hd} q_r[d] · k_j[d]  (the head-dim tail past the last full vector).
template <typename T>
void pagedScoreTail(int64_t rows, int64_t d0, int64_t hd, const float* q, int64_t ldq, const T* const* krow,
                    int64_t n, float* s, int64_t lds) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < n; ++j) {
      float t = 0.f;
      for (int64_t d = d0; d < hd; ++d) t += q[r * ldq + d] * toF32(krow[j][d]);
      s[r * lds + j] += t;
    }
}

// acc[r·lda + coff + (0 : NV·W)] += Σ_{j<n} p[r·ldp + j] · vrow[j][coff + (0 : NV·W)],  r < R.
template <int R, int NV, typename T>
MOR_INLINE void pagedPV(int64_t n, const float* MOR_RESTRICT p, int64_t ldp, const T* const* vrow, int64_t coff,
                        float* MOR_RESTRICT acc, int64_t lda, PrefetchPump& pf) {
  vf a[R][NV];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) a[r][c] = vload(acc + r * lda + coff + c * W);
  for (int64_t j = 0; j < n; ++j) {
    pf.step();
    const T* vj = vrow[j] + coff;
    vf vv[NV];
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) vv[c] = vloadT(vj + c * W);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const vf pr = bcast(p[r * ldp + j]);
#pragma GCC unroll 4
      for (int c = 0; c < NV; ++c) a[r][c] += pr * vv[c];
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < NV; ++c) vstore(acc + r * lda + coff + c * W, a[r][c]);
}

// pagedPV over the head dim: NVMAX vectors per pass, then a scalar tail past the last full vector.
template <int R, typename T>
void pagedValues(int64_t hd, int64_t n, const float* p, int64_t ldp, const T* const* vrow, float* acc,
                 int64_t lda, PrefetchPump& pf) {
  const int64_t hdv = hd / W;
  int64_t c = 0;
  for (; c + NVMAX <= hdv; c += NVMAX) pagedPV<R, NVMAX>(n, p, ldp, vrow, c * W, acc, lda, pf);
  switch (hdv - c) {
    case 1: pagedPV<R, 1>(n, p, ldp, vrow, c * W, acc, lda, pf); break;
    case 2: pagedPV<R, 2>(n, p, ldp, vrow, c * W, acc, lda, pf); break;
    case 3: pagedPV<R, 3>(n, p, ldp, vrow, c * W, acc, lda, pf); break;
    default: break;
  }
  for (int64_t d = hdv * W; d < hd; ++d)
    for (int r = 0; r < R; ++r) {
      float t = acc[r * lda + d];
      for (int64_t j = 0; j < n; ++j) t += p[r * ldp + j] * toF32(vrow[j][d]);
      acc[r * lda + d] = t;
    }
}

// Not inlined: inside the (large) task function GCC kept the accumulators in memory.
template <typename T>
__attribute__((noinline)) void pagedScoreRows(int64_t rows, int64_t hd, const float* q, int64_t ldq,
                                              const T* const* krow, int64_t n, float* s, int64_t lds,
                                              PrefetchPump& pf) {
  const int64_t hdv = hd / W;
  // U·R ≤ 8 accumulators; query rows in registers when R·NV ≤ 8 (HD = 64 and two heads per kv
  // head on AVX-512).
  if (hdv == 4 && rows == 2) {
    pagedScores<2, 4, 4>(hdv, q, ldq, krow, n, s, lds, pf);
  } else if (hdv == 4 && rows == 1) {
    pagedScores<1, 4, 4>(hdv, q, ldq, krow, n, s, lds, pf);
  } else if (hdv == 2 && rows <= 4) {
    switch (rows) {
      case 1: pagedScores<1, 4, 2>(hdv, q, ldq, krow, n, s, lds, pf); break;
      case 2: pagedScores<2, 4, 2>(hdv, q, ldq, krow, n, s, lds, pf); break;
      case 3: pagedScores<3, 2, 2>(hdv, q, ldq, krow, n, s, lds, pf); break;
      default: pagedScores<4, 2, 2>(hdv, q, ldq, krow, n, s, lds, pf); break;
    }
  } else {
    switch (rows) {
      case 1: pagedScores<1, 4, 0>(hdv, q, ldq, krow, n, s, lds, pf); break;
      case 2: pagedScores<2, 4, 0>(hdv, q, ldq, krow, n, s, lds, pf); break;
      case 3: pagedScores<3, 2, 0>(hdv, q, ldq, krow, n, s, lds, pf); break;
      case 4: pagedScores<4, 2, 0>(hdv, q, ldq, krow, n, s, lds, pf); break;
      case 5: pagedScores<5, 1, 0>(hdv, q, ldq, krow, n, s, lds, pf); break;
      case 6: pagedScores<6, 1, 0>(hdv, q, ldq, krow, n, s, lds, pf); break;
      case 7: pagedScores<7, 1, 0>(hdv, q, ldq, krow, n, s, lds, pf); break;
      default: pagedScores<8, 1, 0>(hdv, q, ldq, krow, n, s, lds, pf); break;
    }
  }
  if (hdv * W < hd) pagedScoreTail(rows, hdv * W, hd, q, ldq, krow, n, s, lds);
}

template <typename T>
__attribute__((noinline)) void pagedValueRows(int64_t rows, int64_t hd, int64_t n, const float* p, int64_t ldp,
                                              const T* const* vrow, float* acc, int64_t lda,
                                              PrefetchPump& pf) {
  switch (rows) {
    case 1: pagedValues<1>(hd, n, p, ldp, vrow, acc, lda, pf); break;
    case 2: pagedValues<2>(hd, n, p, ldp, vrow, acc, lda, pf); break;
    case 3: pagedValues<3>(hd, n, p, ldp, vrow, acc, lda, pf); break;
    default: pagedValues<4>(hd, n, p, ldp, vrow, acc, lda, pf); break;
  }
}

struct PagedTask {
  int32_t i;       // query row
  int32_t j0, j1;  // stream slots [j0, j1) (all of it unless the stream is split)
  int32_t part;    // index of its partial (m, l, acc) when split, else −1
};

struct PagedMerge {
  int32_t i, part0, parts;
};

// One task: the online softmax of every head of query row i over stream slots [j0, j1). A chunk
// of slots is gathered once and serves every kv head while its rows are in cache (a task per kv
// head re-read the rows once the stream outgrew the cache). With part < 0 it writes the output
// rows; else (m, l, acc) into its partial, which holds [m (H)][l (H)][acc (H, hdp)]. `next`, the
// task this thread runs after this one (or null), has its first chunk prefetched while the last
// chunk of this one computes, so a row's memory reads overlap the previous row's arithmetic;
// `prefetched` says an earlier task did that for this one (else its first chunk goes at once).
template <typename T>
void pagedTask(const PagedShape& a, const PagedTask& t, const PagedTask* next, bool prefetched, const float* q,
               const T* kPool, const T* vPool, float* out, float* partials, int64_t hdp, int64_t chunkBytes) {
  const int64_t HD = a.headDim, H = a.numHeads, KVH = a.numKvHeads, G = H / KVH, bs = a.blockSize;
  const int64_t ld = KVH * HD, i = t.i;
  float* qs = scratch(17, static_cast<size_t>(H * hdp));
  float* S = scratch(19, static_cast<size_t>(G * PC));
  float* own = scratch(18, static_cast<size_t>(H * (hdp + 2)));
  float* m = t.part < 0 ? own : partials + static_cast<int64_t>(t.part) * H * (hdp + 2);
  float* l = m + H;
  float* acc = l + H;
  for (int64_t r = 0; r < H; ++r) {
    const float* src = q + (i * H + r) * HD;
    float* d = qs + r * hdp;
    for (int64_t c = 0; c < HD; ++c) d[c] = src[c] * a.scale;
    for (int64_t c = HD; c < hdp; ++c) d[c] = 0.f;
    m[r] = kNegInf;
    l[r] = 0.f;
  }
  std::memset(acc, 0, sizeof(float) * static_cast<size_t>(H * hdp));

  const int32_t* pos = a.posPool;
  // Cache lines of a whole pool row (every kv head), prefetched into L2 (hint 2: an L1-only,
  // non-temporal line was gone before the next head's pass reached it).
  constexpr int64_t perLine = 64 / sizeof(T);
  const int64_t lines = (ld + perLine - 1) / perLine;
  auto prefetchRow = [&](int64_t slot) {
    const T* krow = kPool + slot * ld;
    const T* vrow = vPool + slot * ld;
    for (int64_t c = 0; c < lines; ++c) {
      __builtin_prefetch(krow + c * perLine, 0, 2);
      __builtin_prefetch(vrow + c * perLine, 0, 2);
    }
  };
  const int32_t qp = a.qPos[i];
  const int32_t* bt = a.blockTables + a.streams[2 * i];
  // visible slots per chunk: chunkBytes of K and V rows, a multiple of 8, 8..PC
  const int64_t pc =
      std::clamp<int64_t>(chunkBytes / (2 * ld * static_cast<int64_t>(sizeof(T))) / 8 * 8, 8, PC);
  int64_t slots[2][PC];  // [buffer][visible slot]
  int64_t j = t.j0;
  // Gather up to pc visible slots from stream position j on, a block at a time (the pump
  // prefetches their rows while the chunk before them computes).
  auto gather = [&](int64_t* dst) -> int {
    int n = 0;
    while (j < t.j1 && n < pc) {
      const int64_t b = j / bs, within = j - b * bs;
      const int64_t base = static_cast<int64_t>(bt[b]) * bs + within;
      const int64_t left = std::min<int64_t>(t.j1 - j, bs - within);
      int64_t u = 0;
      for (; u < left && n < pc; ++u) {
        const int64_t slot = base + u;
        if (pos[slot] > qp) continue;  // not visible to this query
        dst[n++] = slot;
      }
      j += u;
    }
    return n;
  };
  // The slots of the next task's first chunk (visibility unchecked: a spare line is harmless).
  int64_t nextSlots[PC];
  auto nextFirstChunk = [&]() -> int {
    if (next == nullptr) return 0;
    const int32_t* nbt = a.blockTables + a.streams[2 * next->i];
    const int64_t end = std::min<int64_t>(next->j1, next->j0 + pc);
    int cnt = 0;
    for (int64_t jj = next->j0; jj < end; ++jj) nextSlots[cnt++] = static_cast<int64_t>(nbt[jj / bs]) * bs + jj % bs;
    return cnt;
  };
  PrefetchPump pf;
  pf.k = reinterpret_cast<const char*>(kPool);
  pf.v = reinterpret_cast<const char*>(vPool);
  pf.rowBytes = ld * static_cast<int64_t>(sizeof(T));
  pf.lines = lines;
  // The pump's rows, spread over the P·V steps of a chunk of `computeSlots` slots (the score
  // steps come on top, so it runs dry early; drain() issues what is left at the chunk's end).
  auto pumpOver = [&](const int64_t* src, int cnt, int64_t computeSlots) {
    pf.slots = src;
    pf.n = cnt;
    pf.x = 0;
    pf.c = 0;
    const int64_t steps = std::max<int64_t>(1, KVH * computeSlots);
    pf.per = static_cast<int>(std::max<int64_t>(1, (cnt * lines + steps - 1) / steps));
  };
  const T* kr[PC];
  const T* vr[PC];
  int cur = 0;
  int n = gather(slots[0]);
  if (!prefetched)  // the thread's first task: nothing fetched its rows ahead
    for (int x = 0; x < n; ++x) prefetchRow(slots[0][x]);
  if (n == 0) {
    pumpOver(nextSlots, nextFirstChunk(), 1);
    pf.drain();
  }
  while (n > 0) {
    const int nNext = gather(slots[cur ^ 1]);
    if (nNext > 0)
      pumpOver(slots[cur ^ 1], nNext, n);
    else
      pumpOver(nextSlots, nextFirstChunk(), n);
    for (int64_t g = 0; g < KVH; ++g) {
      for (int x = 0; x < n; ++x) {
        kr[x] = kPool + slots[cur][x] * ld + g * HD;
        vr[x] = vPool + slots[cur][x] * ld + g * HD;
      }
      const float* qg = qs + g * G * hdp;
      float* mg = m + g * G;
      float* lg = l + g * G;
      float* ag = acc + g * G * hdp;
      for (int64_t r0 = 0; r0 < G; r0 += PRS)
        pagedScoreRows(std::min<int64_t>(PRS, G - r0), HD, qg + r0 * hdp, hdp, kr, n, S + r0 * PC, PC, pf);
      for (int64_t r = 0; r < G; ++r) {
        float* sr = S + r * PC;
        const float cm = rowMax(sr, n);
        const float mNew = cm > mg[r] ? cm : mg[r];
        const float alpha = sexp(mg[r] - mNew);  // 0 on the first chunk (m = −inf)
        lg[r] = lg[r] * alpha + expRow(sr, n, mNew);
        if (alpha != 1.f) {
          float* ar = ag + r * hdp;
          const vf va = vset1(alpha);
          for (int64_t c = 0; c < hdp; c += W) vstore(ar + c, vload(ar + c) * va);
        }
        mg[r] = mNew;
      }
      for (int64_t r0 = 0; r0 < G; r0 += PRV)
        pagedValueRows(std::min<int64_t>(PRV, G - r0), HD, n, S + r0 * PC, PC, vr, ag + r0 * hdp, hdp, pf);
    }
    pf.drain();
    cur ^= 1;
    n = nNext;
  }
  if (t.part >= 0) return;
  for (int64_t r = 0; r < H; ++r) {
    float* o = out + (i * H + r) * HD;
    const float* src = acc + r * hdp;
    const float inv = l[r] == 0.f ? 0.f : 1.f / l[r];  // l = 0: the query saw no slot
    for (int64_t c = 0; c < HD; ++c) o[c] = src[c] * inv;
  }
}

// out rows of query row i from the partials of its parts: weights e^(m_p − M).
void pagedMerge(const PagedShape& a, const PagedMerge& mg, const float* partials, float* out, int64_t hdp) {
  const int64_t HD = a.headDim, H = a.numHeads, stride = H * (hdp + 2);
  for (int64_t r = 0; r < H; ++r) {
    float* o = out + (static_cast<int64_t>(mg.i) * H + r) * HD;
    float M = kNegInf;
    for (int64_t p = 0; p < mg.parts; ++p) {
      const float mp = partials[(mg.part0 + p) * stride + r];
      M = mp > M ? mp : M;
    }
    std::memset(o, 0, sizeof(float) * static_cast<size_t>(HD));
    if (M == kNegInf) continue;  // no part saw a slot
    float L = 0.f;
    for (int64_t p = 0; p < mg.parts; ++p) {
      const float* base = partials + (mg.part0 + p) * stride;
      const float w = sexp(base[r] - M);
      L += w * base[H + r];
      const float* ap = base + 2 * H + r * hdp;
      for (int64_t c = 0; c < HD; ++c) o[c] += w * ap[c];
    }
    const float inv = L == 0.f ? 0.f : 1.f / L;
    for (int64_t c = 0; c < HD; ++c) o[c] *= inv;
  }
}

}  // namespace

void attentionPagedValidate(const PagedShape& a) {
  auto fail = [](const std::string& m) { throw KernelError(ErrKind::Argument, "attentionPaged: " + m); };
  if (a.numHeads < 1 || a.numKvHeads < 1 || a.headDim < 1 || a.blockSize < 1)
    fail("numHeads, numKvHeads, headDim and blockSize must be ≥ 1");
  if (a.numHeads % a.numKvHeads != 0)
    fail("numHeads (" + std::to_string(a.numHeads) + ") must be a multiple of numKvHeads (" +
         std::to_string(a.numKvHeads) + ")");
  const int64_t bs = a.blockSize;
  for (int64_t i = 0; i < a.nq; ++i) {
    const int64_t off = a.streams[2 * i], n = a.streams[2 * i + 1];
    // Messages are built only on failure (this runs on every decoding step).
    auto at = [&]() {
      return "stream " + std::to_string(i) + " [offset " + std::to_string(off) + ", " + std::to_string(n) + " slots]";
    };
    if (off < 0 || n < 0) fail(at() + " has a negative entry");
    const int64_t nb = (n + bs - 1) / bs;
    if (off + nb > a.tableLen)
      fail(at() + " needs blockTables[" + std::to_string(off) + ", " + std::to_string(off + nb) + ") (" +
           std::to_string(nb) + " blocks of " + std::to_string(bs) + "), but blockTables has " +
           std::to_string(a.tableLen) + " entries");
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t id = a.blockTables[off + b];
      const int64_t used = std::min<int64_t>(bs, n - b * bs);
      if (id >= 0 && id * bs + used <= a.numSlots) continue;
      const std::string blk = "block id " + std::to_string(id) + " at blockTables[" + std::to_string(off + b) + "]";
      if (id < 0) fail(at() + ": " + blk + " is negative");
      fail(at() + ": " + blk + " is outside the pool: the stream reads its slots [" + std::to_string(id * bs) + ", " +
           std::to_string(id * bs + used) + "), the pool has " + std::to_string(a.numSlots) + " slots (blocks of " +
           std::to_string(bs) + ")");
    }
  }
}

namespace {
// The pool's storage T: float, or uint16_t holding bf16 (widened to f32 as it is read).
template <typename T>
void attentionPagedImpl(const PagedShape& a, const float* q, const T* kPool, const T* vPool, float* out) {
  const int64_t HD = a.headDim, H = a.numHeads, nq = a.nq;
  const int64_t hdp = roundUp(HD, W);
  if (nq == 0) return;

  double work = 0;  // flops: scores and P·V, 2 each per slot, head and dim
  double bytes = 0;  // K and V rows read
  for (int64_t i = 0; i < nq; ++i) {
    work += static_cast<double>(a.streams[2 * i + 1]) * H * HD * 4.0;
    bytes += static_cast<double>(a.streams[2 * i + 1]) * 2.0 * a.numKvHeads * HD * sizeof(T);
  }
  // the FLOP threshold of attentionForward's decode path; a few queries over long streams go by bytes
  const int threads = threadsForFlopsAndBytes(work, 4.0e5, bytes);

  // Split streams when query rows are too few for the threads: about 4 tasks per thread, parts
  // of at least kMinPart slots.
  const int64_t want = threads > 1 && nq < 2 * threads ? (4 * threads + nq - 1) / nq : 1;
  std::vector<PagedTask> tasks;
  std::vector<PagedMerge> merges;
  tasks.reserve(static_cast<size_t>(nq));
  int32_t nParts = 0;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t n = a.streams[2 * i + 1];
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(want, n / kMinPart));
    if (parts == 1) {
      tasks.push_back({static_cast<int32_t>(i), 0, static_cast<int32_t>(n), -1});
      continue;
    }
    merges.push_back({static_cast<int32_t>(i), nParts, static_cast<int32_t>(parts)});
    for (int64_t p = 0; p < parts; ++p)
      tasks.push_back({static_cast<int32_t>(i), static_cast<int32_t>(n * p / parts),
                       static_cast<int32_t>(n * (p + 1) / parts), nParts++});
  }
  // Longest first, for the dynamic schedule.
  std::stable_sort(tasks.begin(), tasks.end(),
                   [](const PagedTask& x, const PagedTask& y) { return x.j1 - x.j0 > y.j1 - y.j0; });
  float* partials =
      nParts > 0 ? scratch(21, static_cast<size_t>(static_cast<int64_t>(nParts) * H * (hdp + 2))) : nullptr;

  // Dynamic schedule, one task claimed ahead: a thread takes its next task before it runs the
  // current one, so the current one can prefetch the next one's first chunk.
  const int64_t nTasks = static_cast<int64_t>(tasks.size());
  const int64_t chunkBytes = nParts > 0 ? kChunkBytes : kChunkBytesWhole;
  std::atomic<int64_t> claim{0};
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    int64_t cur = claim.fetch_add(1, std::memory_order_relaxed);
    bool prefetched = false;  // this thread's previous task fetched cur's first chunk ahead
    while (cur < nTasks) {
      const int64_t nxt = claim.fetch_add(1, std::memory_order_relaxed);
      pagedTask<T>(a, tasks[static_cast<size_t>(cur)], nxt < nTasks ? &tasks[static_cast<size_t>(nxt)] : nullptr,
                   prefetched, q, kPool, vPool, out, partials, hdp, chunkBytes);
      prefetched = true;
      cur = nxt;
    }
    if (!merges.empty()) {
#pragma omp barrier
#pragma omp for schedule(static)
      for (size_t mi = 0; mi < merges.size(); ++mi) pagedMerge(a, merges[mi], partials, out, hdp);
    }
  }
}

}  // namespace

void attentionPaged(const PagedShape& a, const float* q, const float* kPool, const float* vPool, float* out) {
  attentionPagedValidate(a);
  attentionPagedImpl(a, q, kPool, vPool, out);
}

void attentionPagedBf16(const PagedShape& a, const float* q, const uint16_t* kPool, const uint16_t* vPool, float* out) {
  attentionPagedValidate(a);
  attentionPagedImpl(a, q, kPool, vPool, out);
}

MOR_ISA_END
