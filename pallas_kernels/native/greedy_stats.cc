// Per-row argmax and logsumexp of a logit matrix, as an XLA FFI custom call (target "trellis_greedy_stats").
//
// Contract (pallas_kernels/greedy_stats.py is the only caller): logits [S, V] float32 -> ids [S] int32, the
// first index of each row's maximum, and lse [S] float32, log(sum(exp(row))). A row of -inf gives id 0
// and lse -inf. NaN logits give an unspecified id and a NaN lse.
//
// Why it exists: a greedy decode step needs exactly these two numbers per row (the token, and its logprob
// = logit - lse). XLA:CPU spends ~2 ms on a top-k of 1 plus ~1 ms on the logsumexp for 32 rows of SmolLM2's
// 49152-token vocabulary; here one row is two passes over 192 KB that stays in L2.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "attention_common.h"  // exp_nonpositive
#include "parallel_for.h"
#include "ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

#if defined(__AVX512F__)
// Lane l tracks the largest value among indices l, l+16, ... and the first index holding it.
void row_stats(const float* row, int64_t V, int32_t* id, float* lse) {
  __m512 best = _mm512_set1_ps(kNegInf);
  __m512i best_at = _mm512_setzero_si512();
  __m512i at = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  int64_t i = 0;
  for (; i + 16 <= V; i += 16, at = _mm512_add_epi32(at, step)) {
    const __m512 x = _mm512_loadu_ps(row + i);
    const __mmask16 greater = _mm512_cmp_ps_mask(x, best, _CMP_GT_OQ);  // strictly: keep the first index
    best = _mm512_mask_mov_ps(best, greater, x);
    best_at = _mm512_mask_mov_epi32(best_at, greater, at);
  }
  float max_value = _mm512_reduce_max_ps(best);
  const __mmask16 holders = _mm512_cmp_ps_mask(best, _mm512_set1_ps(max_value), _CMP_EQ_OQ);
  int32_t max_at = holders ? _mm512_mask_reduce_min_epi32(holders, best_at) : 0;
  for (; i < V; ++i)
    if (row[i] > max_value) max_value = row[i], max_at = static_cast<int32_t>(i);
  *id = max_at;
  if (max_value == kNegInf) {
    *lse = kNegInf;
    return;
  }
  const __m512 shift = _mm512_set1_ps(max_value);
  __m512 sum = _mm512_setzero_ps();
  for (i = 0; i + 16 <= V; i += 16)
    sum = _mm512_add_ps(sum, trellis::exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(row + i), shift)));
  float total = _mm512_reduce_add_ps(sum);
  for (; i < V; ++i) total += std::exp(row[i] - max_value);
  *lse = max_value + std::log(total);
}
#else
void row_stats(const float* row, int64_t V, int32_t* id, float* lse) {
  float max_value = kNegInf;
  int32_t max_at = 0;
  for (int64_t i = 0; i < V; ++i)
    if (row[i] > max_value) max_value = row[i], max_at = static_cast<int32_t>(i);
  *id = max_at;
  if (max_value == kNegInf) {
    *lse = kNegInf;
    return;
  }
  float total = 0.f;
  for (int64_t i = 0; i < V; ++i) total += std::exp(row[i] - max_value);
  *lse = max_value + std::log(total);
}
#endif

ffi::Error GreedyStats(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> logits, ffi::ResultBuffer<ffi::S32> ids,
                       ffi::ResultBuffer<ffi::F32> lse) {
  auto dims = logits.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("greedy_stats: logits must be [S, V]");
  const int64_t S = dims[0], V = dims[1];
  if (V < 1 || V > std::numeric_limits<int32_t>::max())
    return ffi::Error::InvalidArgument("greedy_stats: the vocabulary must have 1 .. 2^31-1 entries");
  const float* x = logits.typed_data();
  int32_t* id = ids->typed_data();
  float* out = lse->typed_data();
  // A row is ~10 us at SmolLM2's vocabulary: waking the pool (~20 us) pays from a few rows on.
  auto task = [&](int64_t s) { row_stats(x + s * V, V, id + s, out + s); };
  if (S * V < (1 << 17)) {
    for (int64_t s = 0; s < S; ++s) task(s);
  } else {
    trellis::parallel_for(pool, S, task);
  }
  return ffi::Error::Success();
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisGreedyStats, GreedyStats);

// Whether this build has the vectorised path; the scalar loops are slower than XLA (its exp vectorises).
extern "C" int TrellisGreedyStatsIsVectorized() {
#if defined(__AVX512F__)
  return 1;
#else
  return 0;
#endif
}
