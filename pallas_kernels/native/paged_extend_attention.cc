// Paged extend (prefill) attention for CPU, as an XLA FFI custom call (target "trellis_paged_extend_attention").
//
// Contract (pallas_kernels/ragged_paged_attention/cpu_native.py is the only caller): for every sequence
// b < num_seqs with q_len = cu_q_lens[b+1] - cu_q_lens[b] >= 2, query row t of it sits at position
// kv_lens[b] - q_len + (t - cu_q_lens[b]) (the prefix offset) and attends causally, and within the sliding
// window if one is given, over that sequence's keys of `layer` through page_table[b]; soft cap as in
// reference.py. Every other output row is zero. q is float32 and already scaled; pages are float32 or
// bfloat16; arithmetic is float32.
//
// Why it exists: XLA:CPU runs this as small batched matmuls plus separate mask/max/exp/sum passes and
// reached ~80 GFLOP/s of useful work on a 2-core AVX-512 VM whose matmuls run at ~220
// (docs/benchmarks/paged-attention-cpu.md).
// Layout here: a task is (sequence, kv head, tile of 16 query rows). Its 16*G query vectors are the
// vector lanes: Q is transposed once per task into [D][16G], so the scores of one 16-key page are 16
// vectors built from broadcast key elements, and the online softmax (row max, exp, sum) is element-wise
// across those vectors, with no horizontal reductions. P.V accumulates into a transposed [D][16G]
// accumulator that stays in L1/L2. Tasks are claimed longest first from XLA's intra-op thread pool.
// bfloat16 pages of a bfloat16 model (attribute bf16_products) on AVX512_BF16 CPUs take both products
// through vdpbf16ps (Q and the probabilities rounded to bfloat16; 1.4-1.6x the float32-converting path on
// the default model's shapes). A float32 model with bfloat16 pages keeps float32 math.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "attention_common.h"
#include "parallel_for.h"
#include "ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using trellis::Geometry;
using trellis::to_float;

constexpr int64_t kTileRows = 16;  // query rows per task: 16*G lanes, a whole number of vectors for any G

struct Task {
  int64_t seq, head, row0, rows, pos0, cost;
};

struct Options {
  float soft_cap;
  int64_t window;       // 0 = none
  bool bf16_products;   // bfloat16 pages: multiply in bf16 where AVX512_BF16 builds (q was bf16 already)
};

inline int64_t first_visible(int64_t pos, int64_t window) {
  return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
}

// Portable path (any page size, no AVX-512): one query vector at a time with a scalar online softmax.
template <typename KV>
void extend_task_portable(const Task& t, const float* q, const KV* k_head, const KV* v_head,
                          const int32_t* pages, const Geometry& geo, Options opt, float* out) {
  const int64_t D = geo.head_dim, G = geo.group, S = geo.page_size, Hq = geo.num_kv_heads * G;
  std::vector<float> acc(D);
  for (int64_t r = 0; r < t.rows; ++r) {
    const int64_t pos = t.pos0 + r;
    for (int64_t g = 0; g < G; ++g) {
      const float* qv = q + ((t.row0 + r) * Hq + t.head * G + g) * D;
      float m = -std::numeric_limits<float>::infinity(), l = 0.f;
      std::fill(acc.begin(), acc.end(), 0.f);
      for (int64_t key = first_visible(pos, opt.window); key <= pos; ++key) {
        const int64_t offset = (static_cast<int64_t>(pages[key / S]) * S + key % S) * D;
        float s = 0.f;
        for (int64_t d = 0; d < D; ++d) s += qv[d] * to_float(k_head[offset + d]);
        if (opt.soft_cap > 0.f) s = opt.soft_cap * std::tanh(s / opt.soft_cap);
        const float m_new = std::max(m, s);
        const float alpha = std::exp(m - m_new), p = std::exp(s - m_new);
        l = l * alpha + p;
        for (int64_t d = 0; d < D; ++d) acc[d] = acc[d] * alpha + p * to_float(v_head[offset + d]);
        m = m_new;
      }
      float* dst = out + ((t.row0 + r) * Hq + t.head * G + g) * D;
      const float inv = l > 0.f ? 1.f / l : 0.f;
      for (int64_t d = 0; d < D; ++d) dst[d] = acc[d] * inv;
    }
  }
}

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#define TRELLIS_EXTEND_VECTORISED 1
// Per-thread working set of one task: Q^T and the accumulator, [D][M] each, M = 16*G lanes.
struct Scratch {
  std::vector<float> qt, acc, m, l, kbuf, vbuf;
  std::vector<int32_t> qpos;
  std::vector<uint32_t> qt2, vpair;  // bfloat16 dot-product path: Q^T and a page's V as bf16 pairs
};

// K or V rows [16][D] of one page as float32: the page itself, or a converted copy of a bfloat16 page.
inline const float* page_rows(const float* page, int64_t, std::vector<float>&) { return page; }
inline const float* page_rows(const uint16_t* page, int64_t n, std::vector<float>& buf) {
  for (int64_t i = 0; i < n; ++i) buf[i] = to_float(page[i]);
  return buf.data();
}

// Where a page's keys need a per-lane mask: past some row's position, or before some row's window.
inline bool needs_mask(int64_t key0, int64_t keys, int64_t min_pos, int64_t max_pos, Options opt) {
  return key0 + keys - 1 > min_pos || (opt.window > 0 && key0 <= max_pos - opt.window);
}

#endif

#if defined(__AVX512F__)
// Scores of 16 lanes (query vectors) against the 16 keys of a page: s[j] lane m = q_m . k_j.
inline void page_scores(const float* qt, int64_t lanes, const float* keys, int64_t D, __m512 s[16]) {
  for (int j = 0; j < 16; ++j) s[j] = _mm512_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    const __m512 qd = _mm512_loadu_ps(qt + d * lanes);
    for (int j = 0; j < 16; ++j) s[j] = _mm512_fmadd_ps(qd, _mm512_set1_ps(keys[j * D + d]), s[j]);
  }
}

// acc[d] (16 lanes) = acc[d] * alpha + sum_j p[j] * v_j[d], eight rows of the accumulator at a time so
// that eight independent FMA chains hide the FMA latency.
inline void accumulate_values(float* acc, int64_t lanes, const float* values, int64_t D, __m512 alpha,
                              const __m512 p[16]) {
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    __m512 a[8];
    for (int i = 0; i < 8; ++i) a[i] = _mm512_mul_ps(_mm512_loadu_ps(acc + (d + i) * lanes), alpha);
    for (int j = 0; j < 16; ++j)
      for (int i = 0; i < 8; ++i) a[i] = _mm512_fmadd_ps(p[j], _mm512_set1_ps(values[j * D + d + i]), a[i]);
    for (int i = 0; i < 8; ++i) _mm512_storeu_ps(acc + (d + i) * lanes, a[i]);
  }
  for (; d < D; ++d) {
    __m512 a = _mm512_mul_ps(_mm512_loadu_ps(acc + d * lanes), alpha);
    for (int j = 0; j < 16; ++j) a = _mm512_fmadd_ps(p[j], _mm512_set1_ps(values[j * D + d]), a);
    _mm512_storeu_ps(acc + d * lanes, a);
  }
}

// A 16-key page folded into the online softmax of all M lanes, 16 lanes at a time: scores(chunk, s) fills
// the 16 key vectors of 16 lanes, accumulate(chunk, alpha, p) rescales those lanes' sums by alpha and adds
// the probabilities p times the page's values.
template <typename Scores, typename Accumulate>
inline void page_softmax_step(Scratch& sc, int64_t M, int64_t key0, int64_t min_pos, int64_t max_pos, Options opt,
                              Scores&& scores, Accumulate&& accumulate) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const bool masked = needs_mask(key0, 16, min_pos, max_pos, opt);
  for (int64_t chunk = 0; chunk < M; chunk += 16) {
    __m512 s[16];
    scores(chunk, s);
    if (opt.soft_cap > 0.f) {
      alignas(64) float tmp[16];
      for (int j = 0; j < 16; ++j) {
        _mm512_store_ps(tmp, s[j]);
        for (float& x : tmp) x = opt.soft_cap * std::tanh(x / opt.soft_cap);
        s[j] = _mm512_load_ps(tmp);
      }
    }
    __mmask16 keep[16];
    for (int j = 0; j < 16; ++j) keep[j] = 0xFFFF;
    if (masked) {
      const __m512i pos = _mm512_loadu_si512(sc.qpos.data() + chunk);
      for (int j = 0; j < 16; ++j) {
        const __m512i key = _mm512_set1_epi32(static_cast<int32_t>(key0 + j));
        keep[j] = _mm512_cmple_epi32_mask(key, pos);
        if (opt.window > 0)
          keep[j] &= _mm512_cmpgt_epi32_mask(_mm512_add_epi32(key, _mm512_set1_epi32(opt.window)), pos);
        s[j] = _mm512_mask_mov_ps(_mm512_set1_ps(neg_inf), keep[j], s[j]);
      }
    }
    __m512 page_max = s[0];
    for (int j = 1; j < 16; ++j) page_max = _mm512_max_ps(page_max, s[j]);
    const __m512 m_old = _mm512_loadu_ps(sc.m.data() + chunk);
    const __m512 m_new = _mm512_max_ps(m_old, page_max);
    // Lanes that have seen no visible key yet keep max -inf; subtract 0 there so nothing becomes NaN.
    const __m512 m_safe = _mm512_mask_mov_ps(m_new, _mm512_cmp_ps_mask(m_new, _mm512_set1_ps(neg_inf), _CMP_EQ_OQ),
                                             _mm512_setzero_ps());
    const __m512 alpha = trellis::exp_nonpositive(_mm512_sub_ps(m_old, m_safe));
    __m512 p[16], sum = _mm512_setzero_ps();
    for (int j = 0; j < 16; ++j) {
      p[j] = _mm512_maskz_mov_ps(keep[j], trellis::exp_nonpositive(_mm512_sub_ps(s[j], m_safe)));
      sum = _mm512_add_ps(sum, p[j]);
    }
    _mm512_storeu_ps(sc.l.data() + chunk, _mm512_fmadd_ps(_mm512_loadu_ps(sc.l.data() + chunk), alpha, sum));
    _mm512_storeu_ps(sc.m.data() + chunk, m_new);
    accumulate(chunk, alpha, p);
  }
}

// The float32 products (float32 pages, or bfloat16 pages converted to float32 rows).
inline void page_step(Scratch& sc, int64_t M, const float* keys, const float* values, int64_t D, int64_t key0,
                      int64_t min_pos, int64_t max_pos, Options opt) {
  page_softmax_step(
      sc, M, key0, min_pos, max_pos, opt,
      [&](int64_t chunk, __m512 s[16]) { page_scores(sc.qt.data() + chunk, M, keys, D, s); },
      [&](int64_t chunk, __m512 alpha, const __m512 p[16]) {
        accumulate_values(sc.acc.data() + chunk, M, values, D, alpha, p);
      });
}

#if defined(__AVX512BF16__)
#define TRELLIS_EXTEND_BF16_DOT 1
// bfloat16 pages on AVX512_BF16: both products by vdpbf16ps, which multiplies 32 bf16 pairs per
// instruction where the float32 FMA does 16 (the extend kernel is bound by its multiply-adds). Q and the
// probabilities are rounded to bfloat16 (to nearest even) for the products; sums, max and exp stay float32.
inline __m512bh as_pairs(__m512i v) { return reinterpret_cast<__m512bh&>(v); }
inline __m512i as_words(__m512bh v) { return reinterpret_cast<__m512i&>(v); }

inline uint32_t bf16_bits(float x) {  // round to nearest even (finite x)
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
}

// s[j] lane m = q_m . k_j, with qt2 [D/2][lanes] holding (q[2i], q[2i+1]) per lane and key j's (k[2i],
// k[2i+1]) one 32-bit broadcast straight from the page.
inline void page_scores_bf16(const uint32_t* qt2, int64_t lanes, const uint16_t* keys, int64_t D, __m512 s[16]) {
  for (int j = 0; j < 16; ++j) s[j] = _mm512_setzero_ps();
  for (int64_t d2 = 0; d2 < D / 2; ++d2) {
    const __m512bh qd = as_pairs(_mm512_loadu_si512(qt2 + d2 * lanes));
    for (int j = 0; j < 16; ++j) {
      int32_t pair;
      std::memcpy(&pair, keys + j * D + 2 * d2, sizeof(pair));
      s[j] = _mm512_dpbf16_ps(s[j], qd, as_pairs(_mm512_set1_epi32(pair)));
    }
  }
}

// vpair [8][D]: (v[2i][d], v[2i+1][d]), the page's value rows paired the way vdpbf16ps reads them. D % 32 == 0.
inline void pair_value_rows(const uint16_t* values, int64_t D, uint32_t* vpair) {
  alignas(64) uint16_t lo[32], hi[32];
  for (int i = 0; i < 16; ++i) {
    lo[2 * i] = i, lo[2 * i + 1] = 32 + i;            // words 0..15 of row a and of row b, interleaved
    hi[2 * i] = 16 + i, hi[2 * i + 1] = 48 + i;       // words 16..31
  }
  const __m512i idx_lo = _mm512_load_si512(lo), idx_hi = _mm512_load_si512(hi);
  for (int i = 0; i < 8; ++i)
    for (int64_t d = 0; d < D; d += 32) {
      const __m512i a = _mm512_loadu_si512(values + 2 * i * D + d), b = _mm512_loadu_si512(values + (2 * i + 1) * D + d);
      _mm512_storeu_si512(vpair + i * D + d, _mm512_permutex2var_epi16(a, idx_lo, b));
      _mm512_storeu_si512(vpair + i * D + d + 16, _mm512_permutex2var_epi16(a, idx_hi, b));
    }
}

// acc[d] = acc[d] * alpha + sum_j p[j] * v_j[d] with (p[2i], p[2i+1]) paired per lane.
inline void accumulate_values_bf16(float* acc, int64_t lanes, const uint32_t* vpair, int64_t D, __m512 alpha,
                                   const __m512 p[16]) {
  alignas(64) uint16_t order[32];
  for (int i = 0; i < 16; ++i) order[2 * i] = i, order[2 * i + 1] = 16 + i;
  const __m512i interleave = _mm512_load_si512(order);
  __m512bh pp[8];
  for (int i = 0; i < 8; ++i)  // cvtne2ps_pbh(a, b): words 0..15 from b, 16..31 from a
    pp[i] = as_pairs(_mm512_permutexvar_epi16(interleave, as_words(_mm512_cvtne2ps_pbh(p[2 * i + 1], p[2 * i]))));
  for (int64_t d = 0; d < D; d += 8) {
    __m512 a[8];
    for (int r = 0; r < 8; ++r) a[r] = _mm512_mul_ps(_mm512_loadu_ps(acc + (d + r) * lanes), alpha);
    for (int i = 0; i < 8; ++i)
      for (int r = 0; r < 8; ++r)
        a[r] = _mm512_dpbf16_ps(a[r], pp[i], as_pairs(_mm512_set1_epi32(static_cast<int32_t>(vpair[i * D + d + r]))));
    for (int r = 0; r < 8; ++r) _mm512_storeu_ps(acc + (d + r) * lanes, a[r]);
  }
}

inline void page_step_bf16(Scratch& sc, int64_t M, const uint16_t* keys, const uint16_t* values, int64_t D,
                           int64_t key0, int64_t min_pos, int64_t max_pos, Options opt) {
  pair_value_rows(values, D, sc.vpair.data());
  page_softmax_step(
      sc, M, key0, min_pos, max_pos, opt,
      [&](int64_t chunk, __m512 s[16]) { page_scores_bf16(sc.qt2.data() + chunk, M, keys, D, s); },
      [&](int64_t chunk, __m512 alpha, const __m512 p[16]) {
        accumulate_values_bf16(sc.acc.data() + chunk, M, sc.vpair.data(), D, alpha, p);
      });
}
#endif
#elif defined(__AVX2__) && defined(__FMA__)
// AVX2 + FMA: 8 lanes, and a page taken as two halves of 8 keys (16 ymm registers: 8 score vectors).
inline void half_page_scores(const float* qt, int64_t lanes, const float* keys, int64_t D, __m256 s[8]) {
  for (int j = 0; j < 8; ++j) s[j] = _mm256_setzero_ps();
  for (int64_t d = 0; d < D; ++d) {
    const __m256 qd = _mm256_loadu_ps(qt + d * lanes);
    for (int j = 0; j < 8; ++j) s[j] = _mm256_fmadd_ps(qd, _mm256_broadcast_ss(keys + j * D + d), s[j]);
  }
}

inline void accumulate_values(float* acc, int64_t lanes, const float* values, int64_t D, __m256 alpha,
                              const __m256 p[8]) {
  int64_t d = 0;
  for (; d + 4 <= D; d += 4) {  // 4 independent chains (8 p + 4 accumulators + broadcast fit 16 registers)
    __m256 a[4];
    for (int i = 0; i < 4; ++i) a[i] = _mm256_mul_ps(_mm256_loadu_ps(acc + (d + i) * lanes), alpha);
    for (int j = 0; j < 8; ++j)
      for (int i = 0; i < 4; ++i) a[i] = _mm256_fmadd_ps(p[j], _mm256_broadcast_ss(values + j * D + d + i), a[i]);
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(acc + (d + i) * lanes, a[i]);
  }
  for (; d < D; ++d) {
    __m256 a = _mm256_mul_ps(_mm256_loadu_ps(acc + d * lanes), alpha);
    for (int j = 0; j < 8; ++j) a = _mm256_fmadd_ps(p[j], _mm256_broadcast_ss(values + j * D + d), a);
    _mm256_storeu_ps(acc + d * lanes, a);
  }
}

// A 16-key page folded into the online softmax of all M lanes, 8 keys and 8 lanes at a time.
inline void page_step(Scratch& sc, int64_t M, const float* keys, const float* values, int64_t D, int64_t key0,
                      int64_t min_pos, int64_t max_pos, Options opt) {
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  const __m256 all = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
  for (int half = 0; half < 2; ++half) {
    const int64_t k0 = key0 + 8 * half;
    if (k0 > max_pos) break;  // every lane's keys end before this half
    const bool masked = needs_mask(k0, 8, min_pos, max_pos, opt);
    const float* half_keys = keys + 8 * half * D;
    const float* half_values = values + 8 * half * D;
    for (int64_t chunk = 0; chunk < M; chunk += 8) {
      __m256 s[8];
      half_page_scores(sc.qt.data() + chunk, M, half_keys, D, s);
      if (opt.soft_cap > 0.f) {
        alignas(32) float tmp[8];
        for (int j = 0; j < 8; ++j) {
          _mm256_store_ps(tmp, s[j]);
          for (float& x : tmp) x = opt.soft_cap * std::tanh(x / opt.soft_cap);
          s[j] = _mm256_load_ps(tmp);
        }
      }
      __m256 keep[8];
      for (int j = 0; j < 8; ++j) keep[j] = all;
      if (masked) {  // positions are < 2^24, exact as floats
        const __m256 pos = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc.qpos.data() + chunk)));
        for (int j = 0; j < 8; ++j) {
          const __m256 key = _mm256_set1_ps(static_cast<float>(k0 + j));
          keep[j] = _mm256_cmp_ps(key, pos, _CMP_LE_OQ);
          if (opt.window > 0)
            keep[j] = _mm256_and_ps(keep[j], _mm256_cmp_ps(_mm256_add_ps(key, _mm256_set1_ps(static_cast<float>(opt.window))),
                                                           pos, _CMP_GT_OQ));
          s[j] = _mm256_blendv_ps(neg_inf, s[j], keep[j]);
        }
      }
      __m256 page_max = s[0];
      for (int j = 1; j < 8; ++j) page_max = _mm256_max_ps(page_max, s[j]);
      const __m256 m_old = _mm256_loadu_ps(sc.m.data() + chunk);
      const __m256 m_new = _mm256_max_ps(m_old, page_max);
      const __m256 m_safe = _mm256_blendv_ps(m_new, _mm256_setzero_ps(), _mm256_cmp_ps(m_new, neg_inf, _CMP_EQ_OQ));
      const __m256 alpha = trellis::exp_nonpositive8(_mm256_sub_ps(m_old, m_safe));
      __m256 p[8], sum = _mm256_setzero_ps();
      for (int j = 0; j < 8; ++j) {
        p[j] = _mm256_and_ps(trellis::exp_nonpositive8(_mm256_sub_ps(s[j], m_safe)), keep[j]);
        sum = _mm256_add_ps(sum, p[j]);
      }
      _mm256_storeu_ps(sc.l.data() + chunk, _mm256_fmadd_ps(_mm256_loadu_ps(sc.l.data() + chunk), alpha, sum));
      _mm256_storeu_ps(sc.m.data() + chunk, m_new);
      accumulate_values(sc.acc.data() + chunk, M, half_values, D, alpha, p);
    }
  }
}
#endif

#if defined(TRELLIS_EXTEND_VECTORISED)
// One task on the vector lanes: Q^T in, pages streamed (next one prefetched), each folded into the online
// softmax of every lane by this build's `page_step`, normalised rows out.
template <typename KV>
void extend_task_vectorised(const Task& t, const float* q, const KV* k_head, const KV* v_head, const int32_t* pages,
                            const Geometry& geo, Options opt, float* out, Scratch& sc) {
  const int64_t D = geo.head_dim, G = geo.group, Hq = geo.num_kv_heads * G;
  const int64_t M = kTileRows * G;
#if defined(TRELLIS_EXTEND_BF16_DOT)
  const bool bf16_dot = std::is_same_v<KV, uint16_t> && opt.bf16_products && D % 32 == 0;
#else
  const bool bf16_dot = false;
#endif
  if (bf16_dot) {
    sc.qt2.assign(D / 2 * M, 0u);
    sc.vpair.resize(8 * D);
  } else {
    sc.qt.assign(D * M, 0.f);
  }
  sc.acc.assign(D * M, 0.f);
  sc.m.assign(M, -std::numeric_limits<float>::infinity());
  sc.l.assign(M, 0.f);
  sc.qpos.resize(M);
  sc.kbuf.resize(16 * D);
  sc.vbuf.resize(16 * D);
  const int64_t min_pos = t.pos0, max_pos = t.pos0 + t.rows - 1;
  for (int64_t r = 0; r < kTileRows; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t lane = r * G + g;
      sc.qpos[lane] = static_cast<int32_t>(r < t.rows ? t.pos0 + r : max_pos);  // padding lanes: finite, unused
      if (r >= t.rows) continue;
      const float* src = q + ((t.row0 + r) * Hq + t.head * G + g) * D;
#if defined(TRELLIS_EXTEND_BF16_DOT)
      if (bf16_dot) {
        for (int64_t d = 0; d < D; d += 2) sc.qt2[d / 2 * M + lane] = bf16_bits(src[d]) | bf16_bits(src[d + 1]) << 16;
        continue;
      }
#endif
      for (int64_t d = 0; d < D; ++d) sc.qt[d * M + lane] = src[d];
    }
  }
  const int64_t lo = first_visible(min_pos, opt.window), hi = max_pos + 1;
  const int64_t page_elems = 16 * D;
  for (int64_t page_index = lo / 16; page_index * 16 < hi; ++page_index) {
    if ((page_index + 1) * 16 < hi) trellis::prefetch_page(k_head, v_head, pages, page_index + 1, page_elems);
#if defined(TRELLIS_EXTEND_BF16_DOT)
    if constexpr (std::is_same_v<KV, uint16_t>) {
      if (bf16_dot) {
        page_step_bf16(sc, M, k_head + pages[page_index] * page_elems, v_head + pages[page_index] * page_elems, D,
                       page_index * 16, min_pos, max_pos, opt);
        continue;
      }
    }
#endif
    const float* keys = page_rows(k_head + pages[page_index] * page_elems, page_elems, sc.kbuf);
    const float* values = page_rows(v_head + pages[page_index] * page_elems, page_elems, sc.vbuf);
    page_step(sc, M, keys, values, D, page_index * 16, min_pos, max_pos, opt);
  }
  for (int64_t r = 0; r < t.rows; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t lane = r * G + g;
      float* dst = out + ((t.row0 + r) * Hq + t.head * G + g) * D;
      const float inv = sc.l[lane] > 0.f ? 1.f / sc.l[lane] : 0.f;
      for (int64_t d = 0; d < D; ++d) dst[d] = sc.acc[d * M + lane] * inv;
    }
  }
}
#endif

// Whether this build takes the vectorised path for `page_size` (the caller prefers XLA otherwise).
bool vectorized(int64_t page_size) {
#if defined(TRELLIS_EXTEND_VECTORISED)
  return page_size == 16;
#else
  (void)page_size;
  return false;
#endif
}

template <typename KV>
void run(ffi::ThreadPool& pool, const float* q, const KV* k_pages, const KV* v_pages, int64_t layer,
         const int32_t* kv_lens, const int32_t* page_table, const int32_t* cu_q_lens, int64_t num_seqs,
         const Geometry& geo, Options opt, float* out) {
  const int64_t Hkv = geo.num_kv_heads;
  std::vector<Task> tasks;
  for (int64_t b = 0; b < num_seqs; ++b) {
    const int64_t q_len = cu_q_lens[b + 1] - cu_q_lens[b];
    if (q_len < 2) continue;
    const int64_t kv_len = std::min<int64_t>(kv_lens[b], geo.max_pages * geo.page_size);
    for (int64_t offset = 0; offset < q_len; offset += kTileRows) {
      const int64_t rows = std::min(kTileRows, q_len - offset);
      const int64_t pos0 = kv_len - q_len + offset;
      if (pos0 + rows - 1 < 0) continue;  // kv_lens shorter than the new rows: nothing to see (as the reference)
      const int64_t span = pos0 + rows - first_visible(pos0, opt.window);
      for (int64_t h = 0; h < Hkv; ++h) tasks.push_back({b, h, cu_q_lens[b] + offset, rows, pos0, span});
    }
  }
  // Longest first, so the last tasks claimed are short and the threads finish together.
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.cost > b.cost; });
  const int64_t layer_stride = Hkv * geo.num_pages * geo.page_size * geo.head_dim;
  const int64_t head_stride = geo.num_pages * geo.page_size * geo.head_dim;
  trellis::parallel_for(pool, static_cast<int64_t>(tasks.size()), [&](int64_t i) {
    const Task& t = tasks[i];
    const KV* k_head = k_pages + layer * layer_stride + t.head * head_stride;
    const KV* v_head = v_pages + layer * layer_stride + t.head * head_stride;
    const int32_t* pages = page_table + t.seq * geo.max_pages;
#if defined(TRELLIS_EXTEND_VECTORISED)
    if (vectorized(geo.page_size)) {
      thread_local Scratch scratch;
      extend_task_vectorised<KV>(t, q, k_head, v_head, pages, geo, opt, out, scratch);
      return;
    }
#endif
    extend_task_portable<KV>(t, q, k_head, v_head, pages, geo, opt, out);
  });
}

ffi::Error PagedExtendAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::AnyBuffer k_pages,
                                ffi::AnyBuffer v_pages, ffi::Buffer<ffi::S32> layer,
                                ffi::Buffer<ffi::S32> kv_lens, ffi::Buffer<ffi::S32> page_table,
                                ffi::Buffer<ffi::S32> cu_q_lens, ffi::Buffer<ffi::S32> num_seqs,
                                ffi::ResultBuffer<ffi::F32> out, float soft_cap, int64_t sliding_window,
                                bool bf16_products) {
  trellis::PagedCall c;
  const Options opt{soft_cap, sliding_window, bf16_products};
  return trellis::with_paged_call(
      "paged_extend_attention", q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs, out, c,
      [&](auto* k, auto* v) {
        using KV = std::remove_const_t<std::remove_pointer_t<decltype(k)>>;
        run<KV>(pool, c.q, k, v, c.layer, c.kv_lens, c.table, c.cu, c.seqs, c.geo, opt, c.out);
      });
}

}  // namespace

// 1 when this build runs the vectorised path for `page_size`, for the Python side's choice of backend.
extern "C" int TrellisExtendAttentionIsVectorized(int64_t page_size) { return vectorized(page_size) ? 1 : 0; }

TRELLIS_FFI_HANDLER(TrellisPagedExtendAttention, PagedExtendAttention,
                    "soft_cap", "sliding_window", "bf16_products");
