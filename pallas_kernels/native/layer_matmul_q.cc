// y = x @ w[layer] for stacked weights kept in GGUF's 32-element block formats (Q8_0, Q4_0, Q4_1) or the
// K-quants Q4_K/Q5_K/Q6_K in their own super-block factors, as an XLA FFI custom call (target
// "trellis_layer_matmul_q").
//
// Contract (pallas_kernels/matmul/native_quantized.py is the only caller): x [M, K] float32; codes
// [L, N, G, B] (G = K/32 groups per output column; Q8_0: B = 32 int8; Q4_0/Q4_1/Q4_K: B = 16 bytes,
// element j in the low nibble of byte j and element j+16 in its high nibble; Q5_K: B = 32 uint8 in [0, 31];
// Q6_K: B = 24, those 16 nibble bytes then 8 bytes holding element j's high 2 bits at byte 16 + j % 8, bits
// 2 * (j / 8), q in [0, 63]); scales and mins:
//   Q8_0/Q4_0/Q4_1: [L, N, G] float16 d and m (mins unread but for Q4_1);
//   Q4_K/Q5_K: scales [L, N, G/8, 2] float16 (d, dmin per super-block), mins [L, N, G, 2] uint8 (sc, m);
//   Q6_K: scales [L, N, G/8, 1] float16 d, mins [L, N, G, 2] int8 (sc of elements 0..15, of 16..31);
// layer int32[], rows int32[]; attribute fmt (0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q4_K, 4 Q5_K, 5 Q6_K) ->
// y [M, N] float32 whose first min(rows, M) rows are x @ dequantize(w[layer]) (element d*q, d*(q-8),
// d*q + m, (d*sc)*q - dmin*m, (d*sc)*(q-32)) with float32 sums, the rest zero. The K-quants' d*sc and
// dmin*m are formed in float32 per group, exactly (11 x 8 significant bits), as gguf forms them.
//
// Why: decode at small batch is bound by the bytes of weights read; Q4_1 is 20 bytes per 32 weights
// against float32's 128. Each group's codes are widened to float32 in registers and multiplied there,
// never written back. The offset terms factor out of the dot: sum_k x_k (d q_k + m) = d (x . q) + m sum_k x_k,
// so the per-group sums of x (computed once per call) carry Q4_1's m and Q4_0's -8d (and the K-quants'
// -dmin*m); a column's float32 factors are formed once per column, 8 at a time where the file has them as
// float16, before its groups are multiplied.
// Codes are widened without shuffles into a permuted element order, x permuted to match once per call
// (quant_groups.h). One row (batch-1 decode) takes four columns at a time, sharing each group's x loads
// and keeping four independent sums; more rows take one column at a time in tiles of kTileRows rows, so a
// column's codes are read from memory once and from L1 for each further tile. Work is split into column
// blocks across XLA's intra-op pool.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "column_blocks.h"
#include "ffi_binding.h"
#include "parallel_for.h"
#include "quant_groups.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using namespace trellis::quant;  // the formats, load_group and prepare_x

constexpr int kTileRows = 8;  // 8 accumulators + 4 group vectors + 1 partial sum + 1 scale of 16 ymm registers

struct Problem {
  const float* x;        // [M, K], permuted group by group to the format's order (the vector build)
  const float* x_sums;   // [M, G]: sum of x over each group
  const float* unscale;  // [M]: what each row's outputs are multiplied by (prepare_x)
  const uint8_t* codes;  // the layer's [N, G, B]
  const void* scales;    // the layer's [N, G] float16 (K-quants: [N, G/8, F] float16)
  const void* mins;      // the same as scales (K-quants: [N, G, 2] 8-bit integer factors)
  float* y;              // [M, N]
  int64_t M, K, N, G, B;
};

// Column n's float32 factors: scale[g * scale_width + i] multiplies group g's dot with its codes (Q6_K: one
// per lane, lanes 0..3 holding elements 0..15 and 4..7 elements 16..31 in either order) and shift[g]
// multiplies its sum of x (Q8_0 and Q6_K: none).
template <int32_t F>
void column_factors(const Problem& p, int64_t n, float* scale, float* shift) {
  if constexpr (k_quant(F)) {
    constexpr int64_t per_super = F == kQ6_K ? 1 : 2;
    const uint16_t* supers = static_cast<const uint16_t*>(p.scales) + n * (p.G / 8) * per_super;
    const uint8_t* ints = static_cast<const uint8_t*>(p.mins) + n * p.G * 2;
    for (int64_t s = 0; s < p.G / 8; ++s) {
      const float d = half_to_float(supers[s * per_super]);
      const float dmin = F == kQ6_K ? 0.f : half_to_float(supers[s * per_super + 1]);
      for (int64_t g = 8 * s; g < 8 * s + 8; ++g) {
        if constexpr (F == kQ6_K) {  // d * sc exactly, as gguf forms it
          const float lo = d * static_cast<int8_t>(ints[2 * g]), hi = d * static_cast<int8_t>(ints[2 * g + 1]);
          for (int i = 0; i < 8; ++i) scale[8 * g + i] = i < 4 ? lo : hi;
        } else {
          scale[g] = d * static_cast<float>(ints[2 * g]);
          shift[g] = -(dmin * static_cast<float>(ints[2 * g + 1]));
        }
      }
    }
    return;
  }
  const uint16_t* d = static_cast<const uint16_t*>(p.scales) + n * p.G;
  const uint16_t* m = static_cast<const uint16_t*>(p.mins) + n * p.G;
  int64_t g = 0;
#if defined(TRELLIS_Q_VECTOR)
  for (; g + 8 <= p.G; g += 8) {  // 8 float16 factors at a time
    const __m256 dv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d + g)));
    _mm256_storeu_ps(scale + g, dv);
    if constexpr (F == kQ4_1)
      _mm256_storeu_ps(shift + g, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m + g))));
    if constexpr (F == kQ4_0) _mm256_storeu_ps(shift + g, _mm256_mul_ps(dv, _mm256_set1_ps(-8.f)));
  }
#endif
  for (; g < p.G; ++g) {
    scale[g] = half_to_float(d[g]);
    if constexpr (F == kQ4_1) shift[g] = half_to_float(m[g]);
    if constexpr (F == kQ4_0) shift[g] = -8.f * scale[g];
  }
}

// sum_g shift[g] * x_sums[g] over a row's G groups: the offset terms of one output.
inline float offset(const float* shift, const float* x_sums, int64_t G) {
  int64_t g = 0;
  float total = 0.f;
#if defined(TRELLIS_Q_VECTOR)
  __m256 acc = _mm256_setzero_ps();
  for (; g + 8 <= G; g += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(shift + g), _mm256_loadu_ps(x_sums + g), acc);
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  total = _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
#endif
  for (; g < G; ++g) total += shift[g] * x_sums[g];
  return total;
}

#if defined(TRELLIS_Q_VECTOR)
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// acc[r] += s * (x[r] . q) over one group's 32 (permuted) elements, x[r] at x + r * K.
template <int MT>
inline void group_rows(const float* x, int64_t K, const __m256 (&q)[4], __m256 s, __m256 (&acc)[MT]) {
  for (int r = 0; r < MT; ++r) {
    const float* xr = x + r * K;
    __m256 t = _mm256_mul_ps(_mm256_loadu_ps(xr), q[0]);
    t = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 8), q[1], t);
    t = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 16), q[2], t);
    t = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 24), q[3], t);
    acc[r] = _mm256_fmadd_ps(s, t, acc[r]);
  }
}

template <int32_t F>
inline __m256 group_scale(const float* scale, int64_t g) {
  return F == kQ6_K ? _mm256_loadu_ps(scale + 8 * g) : _mm256_broadcast_ss(scale + g);
}

// Four sums' totals as one vector: lane c = the sum of v[c]'s lanes.
inline __m128 hsum4(const __m256 (&v)[4]) {
  const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  return _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));
}

// y[m, n .. n+4) for one row m (decode at batch 1): the four columns share each group's x loads and keep
// four independent sums. scale and shift hold the columns' factors one after another (G * scale_width and
// G apart).
template <int32_t F>
void row_quad(const Problem& p, int64_t n, int64_t m, const float* scale, const float* shift) {
  constexpr int64_t B = code_bytes(F);
  constexpr int W = scale_width(F);
  const int64_t G = p.G;
  const uint8_t* codes = p.codes + n * G * B;
  const uint8_t* ahead = codes + 2 * 4 * G * B;  // prefetching past the end of the codes is harmless
  const float* x = p.x + m * p.K;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;  // not an array: kept in registers
  for (int64_t g = 0; g < G; ++g, x += kGroup, codes += B) {
    const __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16),
                 x3 = _mm256_loadu_ps(x + 24);
    auto column = [&](int c, __m256& acc) {
      __m256 q[4];
      load_group<F>(codes + c * G * B, q);
      __m256 t = _mm256_mul_ps(x0, q[0]);
      t = _mm256_fmadd_ps(x1, q[1], t);
      t = _mm256_fmadd_ps(x2, q[2], t);
      t = _mm256_fmadd_ps(x3, q[3], t);
      acc = _mm256_fmadd_ps(group_scale<F>(scale + c * G * W, g), t, acc);
    };
    // The quad two ahead, a group's share of it per group (its 4 * G * B bytes in G steps): the four
    // interleaved column streams of a quad are more than the hardware prefetcher keeps ahead of.
    for (int64_t line = 0; line < 4 * B; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(ahead + g * 4 * B + line), _MM_HINT_T0);
    column(0, a0);
    column(1, a1);
    column(2, a2);
    column(3, a3);
  }
  const __m256 acc[4] = {a0, a1, a2, a3};
  float out[4];
  _mm_storeu_ps(out, hsum4(acc));
  for (int c = 0; c < 4; ++c) {
    const float extra = has_shift(F) ? offset(shift + c * G, p.x_sums + m * G, G) : 0.f;
    p.y[m * p.N + n + c] = (out[c] + extra) * p.unscale[m];
  }
}
#endif

// y[m0 .. m0+MT) x column n, over all K (MT a compile-time count, so the accumulators stay in registers),
// from the column's factors (column_factors).
template <int32_t F, int MT>
void column_tile(const Problem& p, int64_t n, int64_t m0, const float* scale, const float* shift) {
  const uint8_t* codes = p.codes + n * p.G * p.B;
  float out[MT];
#if defined(TRELLIS_Q_VECTOR)
  // Up to 4 rows, two accumulator sets on alternate groups: the sum's chain of dependent adds halves.
  constexpr int kSets = MT <= 4 ? 2 : 1;
  constexpr int64_t B = code_bytes(F);
  __m256 acc[kSets][MT];
  for (auto& set : acc)
    for (auto& a : set) a = _mm256_setzero_ps();
  const float* x = p.x + m0 * p.K;
  int64_t g = 0;
  for (; g + kSets <= p.G; g += kSets)
    for (int set = 0; set < kSets; ++set) {
      __m256 q[4];
      load_group<F>(codes + (g + set) * B, q);
      group_rows<MT>(x + (g + set) * kGroup, p.K, q, group_scale<F>(scale, g + set), acc[set]);
    }
  for (; g < p.G; ++g) {
    __m256 q[4];
    load_group<F>(codes + g * B, q);
    group_rows<MT>(x + g * kGroup, p.K, q, group_scale<F>(scale, g), acc[0]);
  }
  for (int r = 0; r < MT; ++r) out[r] = hsum(kSets == 2 ? _mm256_add_ps(acc[0][r], acc[kSets - 1][r]) : acc[0][r]);
#else
  for (int r = 0; r < MT; ++r) {
    const float* xr = p.x + (m0 + r) * p.K;
    float total = 0.f;
    for (int64_t g = 0; g < p.G; ++g) {
      float t = 0.f, t_hi = 0.f;
      for (int j = 0; j < kGroup; ++j) (j < 16 ? t : t_hi) += xr[g * kGroup + j] * code(codes + g * p.B, F, j);
      const float lo_scale = scale[g * scale_width(F)], hi_scale = scale[g * scale_width(F) + scale_width(F) - 1];
      total += lo_scale * t + hi_scale * t_hi;
    }
    out[r] = total;
  }
#endif
  for (int r = 0; r < MT; ++r) {
    const float extra = has_shift(F) ? offset(shift, p.x_sums + (m0 + r) * p.G, p.G) : 0.f;
    p.y[(m0 + r) * p.N + n] = (out[r] + extra) * p.unscale[m0 + r];
  }
}

// The last tile of rows may be short: pick the tile with exactly that many rows.
template <int32_t F, int MT>
void column_rows(const Problem& p, int64_t n, int64_t m0, int rows, const float* scale, const float* shift) {
  if constexpr (MT > 1)
    if (rows < MT) return column_rows<F, MT - 1>(p, n, m0, rows, scale, shift);
  column_tile<F, MT>(p, n, m0, scale, shift);
}

// Columns [n0, n1) for every row: each column's factors once, then its tiles of rows (one row: four
// columns at a time where the vector build has row_quad).
template <int32_t F>
void column_block(const Problem& p, int64_t n0, int64_t n1) {
  constexpr int kQuad = 4;
  const int64_t width = p.G * scale_width(F), shifts = has_shift(F) ? p.G : 0;
  std::vector<float> scale(kQuad * width), shift(kQuad * shifts);
  int64_t n = n0;
#if defined(TRELLIS_Q_VECTOR)
  if (p.M == 1)
    for (; n + kQuad <= n1; n += kQuad) {
      for (int c = 0; c < kQuad; ++c) column_factors<F>(p, n + c, scale.data() + c * width, shift.data() + c * shifts);
      row_quad<F>(p, n, 0, scale.data(), shift.data());
    }
#endif
  for (; n < n1; ++n) {  // a column's codes come from memory once, then from L1 per tile
    column_factors<F>(p, n, scale.data(), shift.data());
    for (int64_t m0 = 0; m0 < p.M; m0 += kTileRows)
      column_rows<F, kTileRows>(p, n, m0, static_cast<int>(std::min<int64_t>(kTileRows, p.M - m0)), scale.data(),
                                shift.data());
  }
}

using BlockFn = void (*)(const Problem&, int64_t, int64_t);
constexpr BlockFn kBlocks[] = {column_block<kQ8_0>, column_block<kQ4_0>, column_block<kQ4_1>,
                               column_block<kQ4_K>, column_block<kQ5_K>, column_block<kQ6_K>};

// Whether scales and mins have the dims and types the format's contract gives them (for codes c_dims).
bool factors_fit(int32_t fmt, ffi::Span<const int64_t> c_dims, const ffi::AnyBuffer& scales,
                 const ffi::AnyBuffer& mins) {
  auto s_dims = scales.dimensions(), m_dims = mins.dimensions();
  const int64_t G = c_dims[2];
  auto dims_are = [&](ffi::Span<const int64_t> dims, std::vector<int64_t> want) {
    return dims.size() == want.size() && std::equal(want.begin(), want.end(), dims.begin());
  };
  if (k_quant(fmt)) {
    const ffi::DataType ints = fmt == kQ6_K ? ffi::DataType::S8 : ffi::DataType::U8;
    return G % 8 == 0 && dims_are(s_dims, {c_dims[0], c_dims[1], G / 8, fmt == kQ6_K ? 1 : 2}) &&
           dims_are(m_dims, {c_dims[0], c_dims[1], G, 2}) && scales.element_type() == ffi::DataType::F16 &&
           mins.element_type() == ints;
  }
  return dims_are(s_dims, {c_dims[0], c_dims[1], G}) && dims_are(m_dims, {c_dims[0], c_dims[1], G}) &&
         scales.element_type() == ffi::DataType::F16 && mins.element_type() == ffi::DataType::F16;
}

ffi::Error LayerMatmulQ(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer codes, ffi::AnyBuffer scales,
                        ffi::AnyBuffer mins, ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::S32> rows, int32_t fmt,
                        ffi::ResultBuffer<ffi::F32> y) {
  auto x_dims = x.dimensions();
  auto c_dims = codes.dimensions();
  if (fmt < kQ8_0 || fmt > kQ6_K) return ffi::Error::InvalidArgument("layer_matmul_q: fmt must be 0 to 5");
  const int64_t B = code_bytes(fmt);
  if (x_dims.size() != 2 || c_dims.size() != 4 || c_dims[3] != B || x_dims[1] != c_dims[2] * kGroup ||
      !factors_fit(fmt, c_dims, scales, mins))
    return ffi::Error::InvalidArgument(
        "layer_matmul_q: x must be [M, K], codes [L, N, K/32, B] and scales, mins as layer_matmul_q.cc's "
        "contract lays them out for the format");
  const int64_t L = c_dims[0], N = c_dims[1], G = c_dims[2], K = x_dims[1];
  const int64_t layer_id = layer.typed_data()[0];
  if (layer_id < 0 || layer_id >= L) return ffi::Error::InvalidArgument("layer_matmul_q: layer out of range");
  const int64_t M = std::clamp<int64_t>(rows.typed_data()[0], 0, x_dims[0]);
  float* ys = y->typed_data();
  std::fill(ys + M * N, ys + x_dims[0] * N, 0.f);
  if (M == 0) return ffi::Error::Success();
  std::vector<float> xs(M * K), x_sums(M * G), unscale(M);
  prepare_x(x.typed_data(), M, K, fmt, xs.data(), x_sums.data(), unscale.data());
  const Problem p{xs.data(),
                  x_sums.data(),
                  unscale.data(),
                  static_cast<const uint8_t*>(codes.untyped_data()) + layer_id * N * G * B,
                  static_cast<const char*>(scales.untyped_data()) + layer_id * (scales.size_bytes() / L),
                  static_cast<const char*>(mins.untyped_data()) + layer_id * (mins.size_bytes() / L),
                  ys, M, K, N, G, B};
  // Widening a code costs about what streaming 4 bytes of float32 weight does: split the columns as the
  // float32 kernels would for weights that size, so a middling matrix (576 x 960 at one row, ~40 us on one
  // thread) uses both threads (docs/benchmarks/quantized-kernel.md: faster on a quiet machine, slower
  // when the second core is busy with other work).
  const trellis::ColumnBlocks blocks = trellis::column_blocks(M, K, N, 4, pool.num_threads(), 16);
  const BlockFn block = kBlocks[fmt];
  auto run_block = [&](int64_t i) {
    const int64_t n0 = i * blocks.width;
    block(p, n0, std::min<int64_t>(N, n0 + blocks.width));
  };
  trellis::parallel_for(pool, blocks.count, run_block);
  return ffi::Error::Success();
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisLayerMatmulQ, LayerMatmulQ, "fmt");

// Whether this build has the AVX2 + FMA + F16C path; the portable loops are a correctness fallback only.
extern "C" int TrellisLayerMatmulQIsVectorized() {
#if defined(TRELLIS_Q_VECTOR)
  return 1;
#else
  return 0;
#endif
}
