// Paged decode attention for CPU, as an XLA FFI custom call (target "trellis_paged_decode_attention").
//
// Contract (pallas_kernels/ragged_paged_attention/cpu_native.py is the only caller): for every sequence
// b < num_seqs whose query length cu_q_lens[b+1] - cu_q_lens[b] is exactly 1, the query row
// t = cu_q_lens[b] attends over keys 0..kv_lens[b]-1 of `layer` through page_table[b] (sliding window and
// soft cap as in reference.py); every other output row is zero. Arithmetic in float32; pages are float32
// or bfloat16.
//
// Why it exists: XLA:CPU reads paged K/V at 5-15 GB/s through gathers and reductions
// (docs/benchmarks/runner-raw-speed.md, "Native decode kernels"),
// while a decode step is bound by reading them once. Here each (sequence, kv head, context split) task
// streams its pages once, computes the G query heads of the group from the same loaded row, and keeps an
// online softmax; splits are merged at the end (flash-decoding), and tasks are shared between the
// calling thread and XLA's intra-op thread pool.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
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

// Partial softmax state of one task: m (running max), l (sum of exp), acc [G][D].
struct Partial {
  float* m;
  float* l;
  float* acc;
};

// Attends the G query heads `q` [G][D] (already scaled) over tokens [lo, hi) of one sequence's kv head.
// KD is the compile-time head dim (0 = use geo.head_dim).
template <typename KV, int KD>
void attend_range(const float* q, const KV* k_head, const KV* v_head, const int32_t* pages, int64_t lo,
                  int64_t hi, const Geometry& geo, float soft_cap, Partial out) {
  const int64_t D = KD ? KD : geo.head_dim;
  const int64_t G = geo.group, S = geo.page_size;
  const int64_t page_stride = S * D;
  float scores[16 * 64];  // [G][S] for one page; G*S <= 1024 checked by the caller
  for (int64_t g = 0; g < G; ++g) {
    out.m[g] = -std::numeric_limits<float>::infinity();
    out.l[g] = 0.f;
    std::fill(out.acc + g * D, out.acc + (g + 1) * D, 0.f);
  }
  for (int64_t start = lo; start < hi;) {
    const int64_t page_index = start / S;
    const int64_t first = start % S;
    const int64_t last = std::min<int64_t>(S, hi - page_index * S);
    const int64_t page = pages[page_index];
    const KV* k_page = k_head + page * page_stride;
    const KV* v_page = v_head + page * page_stride;
    for (int64_t j = first; j < last; ++j) {
      const KV* k_row = k_page + j * D;
      float k_f[KD ? KD : 256];
      for (int64_t d = 0; d < D; ++d) k_f[d] = to_float(k_row[d]);
      for (int64_t g = 0; g < G; ++g) {
        const float* qg = q + g * D;
        float s = 0.f;
#pragma omp simd reduction(+ : s)
        for (int64_t d = 0; d < D; ++d) s += qg[d] * k_f[d];
        if (soft_cap > 0.f) s = soft_cap * std::tanh(s / soft_cap);
        scores[g * S + j] = s;
      }
    }
    for (int64_t g = 0; g < G; ++g) {
      float* sg = scores + g * S;
      float m_new = out.m[g];
      for (int64_t j = first; j < last; ++j) m_new = std::max(m_new, sg[j]);
      const float alpha = std::exp(out.m[g] - m_new);  // exp(-inf) = 0 on the first page
      float sum = 0.f;
      for (int64_t j = first; j < last; ++j) {
        sg[j] = std::exp(sg[j] - m_new);
        sum += sg[j];
      }
      out.l[g] = out.l[g] * alpha + sum;
      out.m[g] = m_new;
      float* acc = out.acc + g * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) acc[d] *= alpha;
    }
    for (int64_t j = first; j < last; ++j) {
      const KV* v_row = v_page + j * D;
      float v_f[KD ? KD : 256];
      for (int64_t d = 0; d < D; ++d) v_f[d] = to_float(v_row[d]);
      for (int64_t g = 0; g < G; ++g) {
        const float p = scores[g * S + j];
        float* acc = out.acc + g * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) acc[d] += p * v_f[d];
      }
    }
    start = page_index * S + last;
  }
}

#if defined(__AVX512F__)
// AVX-512 path for 16-token pages and head dims that are multiples of 16 (the default geometry). Scores
// of a page are 16 dot products reduced together by a transpose tree (45 shuffles/adds instead of 16
// serial horizontal sums), so the softmax and exp run on one vector per page and query head.
using trellis::load16;
using trellis::exp_nonpositive;

// r[j] -> vector whose lane j is the sum of r[j]'s lanes.
inline __m512 sum_lanes_16(__m512 r[16]) {
  __m512 x[8], y[4], z[2];
  for (int i = 0; i < 8; ++i)
    x[i] = _mm512_add_ps(_mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]), _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]));
  for (int i = 0; i < 4; ++i)
    y[i] = _mm512_add_ps(_mm512_shuffle_ps(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm512_shuffle_ps(x[2 * i], x[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 2; ++i)
    z[i] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                         _mm512_shuffle_f32x4(y[2 * i], y[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(z[0], z[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(z[0], z[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

template <typename KV, int KD>
void attend_range_avx512(const float* q, const KV* k_head, const KV* v_head, const int32_t* pages, int64_t lo,
                         int64_t hi, const Geometry& geo, float soft_cap, Partial out) {
  constexpr int C = KD / 16;                  // 16-float chunks per row
  constexpr int HB = C < 24 ? 24 / C : 1;      // query heads per P.V pass: HB * C accumulators in registers
  constexpr int64_t kPage = 16 * KD;
  const int64_t G = geo.group;
  for (int64_t g = 0; g < G; ++g) {
    out.m[g] = -std::numeric_limits<float>::infinity();
    out.l[g] = 0.f;
    std::fill(out.acc + g * KD, out.acc + (g + 1) * KD, 0.f);
  }
  alignas(64) float probs[64 * 16];  // [G][16] of the current page; G * 16 <= 1024 checked by the caller
  float alpha[64];
  // Pages outer: each page is read from memory once and reused from L1 by the G heads of the group; the
  // next page is prefetched while this one is computed. Per page, three passes over the heads (scores,
  // softmax, P.V) instead of one head at a time, so the heads' dependency chains overlap and each V row
  // is loaded once per block of heads.
  for (int64_t start = lo; start < hi;) {
    const int64_t page_index = start / 16, first = start % 16;
    const int64_t last = std::min<int64_t>(16, hi - page_index * 16);
    const KV* k_page = k_head + pages[page_index] * kPage;
    const KV* v_page = v_head + pages[page_index] * kPage;
    // The next page is prefetched row by row inside the passes below (K in the scores pass, V before
    // P.V) rather than all at once: a burst of 128 prefetches fills the miss buffers and stalls this
    // page's compute behind them (docs/benchmarks/runner-raw-speed.md, "The strip matmul kernel").
    const bool has_next = page_index * 16 + 16 < hi;
    const KV* k_next = has_next ? k_head + pages[page_index + 1] * kPage : nullptr;
    const KV* v_next = has_next ? v_head + pages[page_index + 1] * kPage : nullptr;
    const __mmask16 valid = static_cast<__mmask16>(((1u << last) - 1) & ~((1u << first) - 1));
    for (int64_t g = 0; g < G; ++g) {  // scores and online softmax of each head
      const float* qg = q + g * KD;
      __m512 partial[16];
      for (int j = 0; j < 16; ++j) {  // rows outside [first, last) are read (the page exists) and masked
        if (g == 0 && k_next) trellis::prefetch_row(k_next + j * KD, KD);
        __m512 sum = _mm512_mul_ps(_mm512_loadu_ps(qg), load16(k_page + j * KD));
        for (int c = 1; c < C; ++c)
          sum = _mm512_fmadd_ps(_mm512_loadu_ps(qg + 16 * c), load16(k_page + j * KD + 16 * c), sum);
        partial[j] = sum;
      }
      __m512 scores = sum_lanes_16(partial);
      if (soft_cap > 0.f) {
        alignas(64) float tmp[16];
        _mm512_store_ps(tmp, scores);
        for (float& t : tmp) t = soft_cap * std::tanh(t / soft_cap);
        scores = _mm512_load_ps(tmp);
      }
      const float m = out.m[g];
      const float m_new = std::max(m, _mm512_mask_reduce_max_ps(valid, scores));
      // 0 on the first page (m = -inf); most later pages leave the max alone, and exp is scalar here.
      alpha[g] = m_new == m ? 1.f : std::exp(m - m_new);
      const __m512 p = _mm512_maskz_mov_ps(
          valid, exp_nonpositive(_mm512_sub_ps(_mm512_mask_mov_ps(_mm512_set1_ps(m_new), valid, scores),
                                               _mm512_set1_ps(m_new))));
      out.l[g] = out.l[g] * alpha[g] + _mm512_reduce_add_ps(p);
      out.m[g] = m_new;
      _mm512_store_ps(probs + g * 16, p);
    }
    for (int64_t g0 = 0; g0 < G; g0 += HB) {  // P.V, HB heads at a time
      const int64_t heads = std::min<int64_t>(HB, G - g0);
      __m512 acc[HB][C];
      for (int h = 0; h < HB; ++h) {
        if (h >= heads) break;
        const __m512 a = _mm512_set1_ps(alpha[g0 + h]);
        for (int c = 0; c < C; ++c) acc[h][c] = _mm512_mul_ps(_mm512_loadu_ps(out.acc + (g0 + h) * KD + 16 * c), a);
      }
      if (g0 == 0 && v_next)
        for (int j = 0; j < 16; ++j) trellis::prefetch_row(v_next + j * KD, KD);
      for (int64_t j = first; j < last; ++j) {  // only valid rows: others may hold anything, even NaN
        for (int c = 0; c < C; ++c) {
          const __m512 v = load16(v_page + j * KD + 16 * c);
          for (int h = 0; h < HB; ++h) {
            if (h >= heads) break;
            acc[h][c] = _mm512_fmadd_ps(_mm512_set1_ps(probs[(g0 + h) * 16 + j]), v, acc[h][c]);
          }
        }
      }
      for (int h = 0; h < HB; ++h) {
        if (h >= heads) break;
        for (int c = 0; c < C; ++c) _mm512_storeu_ps(out.acc + (g0 + h) * KD + 16 * c, acc[h][c]);
      }
    }
    start = page_index * 16 + last;
  }
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
// AVX2 + FMA path (no AVX-512) for 16-token pages and head dims that are multiples of 8: the AVX-512
// scheme with 8-lane vectors. The 16 scores of a page are two vectors, each reduced from 8 dot-product
// partials by a horizontal-add tree.
using trellis::exp_nonpositive8;
using trellis::load8;

// r[j] -> vector whose lane j is the sum of r[j]'s lanes.
inline __m256 sum_lanes_8(const __m256 r[8]) {
  const __m256 t0 = _mm256_hadd_ps(r[0], r[1]), t1 = _mm256_hadd_ps(r[2], r[3]);
  const __m256 t2 = _mm256_hadd_ps(r[4], r[5]), t3 = _mm256_hadd_ps(r[6], r[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

inline float max_lanes(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  return std::max(_mm_cvtss_f32(m), _mm_cvtss_f32(_mm_shuffle_ps(m, m, 1)));
}

inline float sum_lanes(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
}

template <typename KV, int KD>
void attend_range_avx2(const float* q, const KV* k_head, const KV* v_head, const int32_t* pages, int64_t lo,
                       int64_t hi, const Geometry& geo, float soft_cap, Partial out) {
  constexpr int C = KD / 8;
  constexpr int64_t kPage = 16 * KD;
  const int64_t G = geo.group;
  const float neg_inf = -std::numeric_limits<float>::infinity();
  for (int64_t g = 0; g < G; ++g) {
    out.m[g] = neg_inf;
    out.l[g] = 0.f;
    std::fill(out.acc + g * KD, out.acc + (g + 1) * KD, 0.f);
  }
  const __m256 lane = _mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t start = lo; start < hi;) {
    const int64_t page_index = start / 16, first = start % 16;
    const int64_t last = std::min<int64_t>(16, hi - page_index * 16);
    const KV* k_page = k_head + pages[page_index] * kPage;
    const KV* v_page = v_head + pages[page_index] * kPage;
    const bool has_next = page_index * 16 + 16 < hi;  // prefetched row by row, as in the AVX-512 path
    const KV* k_next = has_next ? k_head + pages[page_index + 1] * kPage : nullptr;
    const KV* v_next = has_next ? v_head + pages[page_index + 1] * kPage : nullptr;
    __m256 valid[2];  // all-ones lanes for keys in [first, last)
    for (int h = 0; h < 2; ++h) {
      const __m256 key = _mm256_add_ps(lane, _mm256_set1_ps(8.f * h));
      valid[h] = _mm256_and_ps(_mm256_cmp_ps(key, _mm256_set1_ps(static_cast<float>(first)), _CMP_GE_OQ),
                               _mm256_cmp_ps(key, _mm256_set1_ps(static_cast<float>(last)), _CMP_LT_OQ));
    }
    for (int64_t g = 0; g < G; ++g) {
      const float* qg = q + g * KD;
      __m256 scores[2];
      for (int h = 0; h < 2; ++h) {
        __m256 partial[8];
        for (int j = 0; j < 8; ++j) {  // rows outside [first, last) are read (the page exists) and masked
          const KV* k_row = k_page + (8 * h + j) * KD;
          if (g == 0 && k_next) trellis::prefetch_row(k_next + (8 * h + j) * KD, KD);
          __m256 sum = _mm256_mul_ps(_mm256_loadu_ps(qg), load8(k_row));
          for (int c = 1; c < C; ++c) sum = _mm256_fmadd_ps(_mm256_loadu_ps(qg + 8 * c), load8(k_row + 8 * c), sum);
          partial[j] = sum;
        }
        scores[h] = sum_lanes_8(partial);
        if (soft_cap > 0.f) {
          alignas(32) float tmp[8];
          _mm256_store_ps(tmp, scores[h]);
          for (float& t : tmp) t = soft_cap * std::tanh(t / soft_cap);
          scores[h] = _mm256_load_ps(tmp);
        }
      }
      const __m256 ninf = _mm256_set1_ps(neg_inf);
      const float page_max = max_lanes(_mm256_max_ps(_mm256_blendv_ps(ninf, scores[0], valid[0]),
                                                     _mm256_blendv_ps(ninf, scores[1], valid[1])));
      const float m = out.m[g];
      const float m_new = std::max(m, page_max);
      const float alpha = m_new == m ? 1.f : std::exp(m - m_new);
      alignas(32) float p[16];
      __m256 total = _mm256_setzero_ps();
      for (int h = 0; h < 2; ++h) {  // invalid lanes: exp(0) then zeroed, so garbage never reaches exp
        const __m256 x = _mm256_blendv_ps(_mm256_setzero_ps(), _mm256_sub_ps(scores[h], _mm256_set1_ps(m_new)),
                                          valid[h]);
        const __m256 probs = _mm256_and_ps(exp_nonpositive8(x), valid[h]);
        _mm256_store_ps(p + 8 * h, probs);
        total = _mm256_add_ps(total, probs);
      }
      out.l[g] = out.l[g] * alpha + sum_lanes(total);
      out.m[g] = m_new;
      float* acc_g = out.acc + g * KD;
      __m256 acc[C];
      const __m256 a = _mm256_set1_ps(alpha);
      for (int c = 0; c < C; ++c) acc[c] = _mm256_mul_ps(_mm256_loadu_ps(acc_g + 8 * c), a);
      if (g == 0 && v_next)
        for (int j = 0; j < 16; ++j) trellis::prefetch_row(v_next + j * KD, KD);
      for (int64_t j = first; j < last; ++j) {
        const __m256 pj = _mm256_set1_ps(p[j]);
        for (int c = 0; c < C; ++c) acc[c] = _mm256_fmadd_ps(pj, load8(v_page + j * KD + 8 * c), acc[c]);
      }
      for (int c = 0; c < C; ++c) _mm256_storeu_ps(acc_g + 8 * c, acc[c]);
    }
    start = page_index * 16 + last;
  }
}
#endif

template <typename KV, int KD>
void run(ffi::ThreadPool& pool, const float* q, const KV* k_pages, const KV* v_pages, int64_t layer,
         const int32_t* kv_lens, const int32_t* page_table, const int32_t* cu_q_lens, int64_t num_seqs,
         const Geometry& geo, float soft_cap, int64_t sliding_window, int64_t min_split_tokens,
         float* out) {
  const int64_t D = geo.head_dim, G = geo.group, Hkv = geo.num_kv_heads;
  struct Item {  // one task: a context split of one (sequence, kv head)
    int64_t seq, row, head, lo, hi;
  };
  struct Group {  // the consecutive items of one (decode row, kv head), merged at the end
    int64_t row, head, first, count;
  };
  std::vector<Item> items;
  std::vector<Group> groups;
  int64_t num_decode = 0;
  for (int64_t b = 0; b < num_seqs; ++b) num_decode += cu_q_lens[b + 1] - cu_q_lens[b] == 1;
  // Enough tasks to keep every thread busy (~8 each), but never splits shorter than min_split_tokens.
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t wanted_splits = (8 * threads + num_decode * Hkv - 1) / std::max<int64_t>(1, num_decode * Hkv);
  for (int64_t b = 0; b < num_seqs; ++b) {
    if (cu_q_lens[b + 1] - cu_q_lens[b] != 1) continue;
    const int64_t row = cu_q_lens[b];
    const int64_t kv_len = std::min<int64_t>(kv_lens[b], geo.max_pages * geo.page_size);
    const int64_t pos = kv_len - 1;
    const int64_t lo = sliding_window > 0 ? std::max<int64_t>(0, pos - sliding_window + 1) : 0;
    const int64_t hi = std::max<int64_t>(lo, kv_len);
    // Split long contexts so that small batches still use every thread; splits are whole pages.
    const int64_t span = hi - lo;
    const int64_t splits = std::max<int64_t>(
        1, std::min<int64_t>(wanted_splits, span / std::max<int64_t>(min_split_tokens, 1)));
    const int64_t per_split = std::max<int64_t>(
        geo.page_size, ((span + splits - 1) / splits + geo.page_size - 1) / geo.page_size * geo.page_size);
    for (int64_t h = 0; h < Hkv; ++h) {
      const int64_t first = items.size();
      for (int64_t a = lo; a < hi || static_cast<int64_t>(items.size()) == first;) {  // empty context: one empty item
        const int64_t z = std::max(a, std::min<int64_t>(hi, (a / per_split + 1) * per_split));
        items.push_back({b, row, h, a, z});
        if ((a = z) >= hi) break;
      }
      groups.push_back({row, h, first, static_cast<int64_t>(items.size()) - first});
    }
  }
  const int64_t num_items = items.size();
  std::vector<float> scratch(num_items * G * (D + 2));
  const int64_t layer_stride = Hkv * geo.num_pages * geo.page_size * D;
  const int64_t head_stride = geo.num_pages * geo.page_size * D;

  trellis::parallel_for(pool, num_items, [&](int64_t i) {
    const Item& it = items[i];
    float* base = scratch.data() + i * G * (D + 2);
    Partial part{base, base + G, base + 2 * G};
    const float* qh = q + (it.row * Hkv + it.head) * G * D;
    const KV* k_head = k_pages + layer * layer_stride + it.head * head_stride;
    const KV* v_head = v_pages + layer * layer_stride + it.head * head_stride;
    const int32_t* pages = page_table + it.seq * geo.max_pages;
#if defined(__AVX512F__)
    if constexpr (KD % 16 == 0 && KD > 0) {
      if (geo.page_size == 16) {
        attend_range_avx512<KV, KD>(qh, k_head, v_head, pages, it.lo, it.hi, geo, soft_cap, part);
        return;
      }
    }
#elif defined(__AVX2__) && defined(__FMA__)
    if constexpr (KD % 8 == 0 && KD > 0 && KD <= 128) {  // C = KD / 8 accumulators in 16 ymm registers
      if (geo.page_size == 16) {
        attend_range_avx2<KV, KD>(qh, k_head, v_head, pages, it.lo, it.hi, geo, soft_cap, part);
        return;
      }
    }
#endif
    attend_range<KV, KD>(qh, k_head, v_head, pages, it.lo, it.hi, geo, soft_cap, part);
  });

  // Merge each group's splits into its rows of out.
  for (const Group& group : groups) {
    for (int64_t g = 0; g < G; ++g) {
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t s = 0; s < group.count; ++s) m = std::max(m, scratch[(group.first + s) * G * (D + 2) + g]);
      float* dst = out + (group.row * Hkv + group.head) * G * D + g * D;
      std::fill(dst, dst + D, 0.f);
      if (!std::isfinite(m)) continue;  // saw no key: zeros, as the reference
      float l = 0.f;
      for (int64_t s = 0; s < group.count; ++s) {
        const float* base = scratch.data() + (group.first + s) * G * (D + 2);
        const float weight = std::exp(base[g] - m);
        l += base[G + g] * weight;
        const float* acc = base + 2 * G + g * D;
        for (int64_t d = 0; d < D; ++d) dst[d] += weight * acc[d];
      }
      const float inv = l > 0.f ? 1.f / l : 0.f;
      for (int64_t d = 0; d < D; ++d) dst[d] *= inv;
    }
  }
}

template <typename KV>
void dispatch_head_dim(ffi::ThreadPool& pool, const float* q, const KV* k, const KV* v, int64_t layer,
                       const int32_t* kv_lens, const int32_t* table, const int32_t* cu, int64_t num_seqs,
                       const Geometry& geo, float soft_cap, int64_t window, int64_t min_split, float* out) {
  if (geo.head_dim == 64)
    run<KV, 64>(pool, q, k, v, layer, kv_lens, table, cu, num_seqs, geo, soft_cap, window, min_split, out);
  else if (geo.head_dim == 128)
    run<KV, 128>(pool, q, k, v, layer, kv_lens, table, cu, num_seqs, geo, soft_cap, window, min_split, out);
  else
    run<KV, 0>(pool, q, k, v, layer, kv_lens, table, cu, num_seqs, geo, soft_cap, window, min_split, out);
}

ffi::Error PagedDecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::AnyBuffer k_pages,
                                ffi::AnyBuffer v_pages, ffi::Buffer<ffi::S32> layer,
                                ffi::Buffer<ffi::S32> kv_lens, ffi::Buffer<ffi::S32> page_table,
                                ffi::Buffer<ffi::S32> cu_q_lens, ffi::Buffer<ffi::S32> num_seqs,
                                ffi::ResultBuffer<ffi::F32> out, float soft_cap, int64_t sliding_window,
                                int64_t min_split_tokens) {
  trellis::PagedCall c;
  return trellis::with_paged_call(
      "paged_decode_attention", q, k_pages, v_pages, layer, kv_lens, page_table, cu_q_lens, num_seqs, out, c,
      [&](auto* k, auto* v) {
        dispatch_head_dim(pool, c.q, k, v, c.layer, c.kv_lens, c.table, c.cu, c.seqs, c.geo, soft_cap,
                          sliding_window, min_split_tokens, c.out);
      });
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisPagedDecodeAttention, PagedDecodeAttention,
                    "soft_cap", "sliding_window", "min_split_tokens");
