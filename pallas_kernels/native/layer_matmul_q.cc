// y = x @ w[layer] for stacked weights kept in GGUF's 32-element block formats (Q8_0, Q4_0, Q4_1) or the
// K-quants Q4_K/Q5_K/Q6_K repacked into groups with float32 scales, as an XLA FFI custom call (target
// "trellis_layer_matmul_q").
//
// Contract (pallas_kernels/matmul/native_quantized.py is the only caller): x [M, K] float32; codes
// [L, N, G, B] (G = K/32 groups per output column; Q8_0: B = 32 int8; Q5_K: B = 32 uint8 in [0, 31]; Q6_K:
// B = 32 int8 in [-32, 31], the op's [L, N, K/16, 16] codes viewed two 16-groups at a time; K16 (layers
// mixing K-quants) the same with int8 codes in [-32, 31] and a min per 16-group too;
// Q4_0/Q4_1/Q4_K: B = 16 bytes, element j in the low nibble of byte j and element j+16 in its high nibble);
// scales [L, N, G] (d: float16, float32 for Q4_K/Q5_K; Q6_K/K16: [L, N, 2G] float32, one per 16 elements); mins
// [L, N, G] of the scales' type (m of Q4_1/Q4_K/Q5_K; the other formats pass any such array, unread); layer
// int32[], rows int32[]; attribute fmt (0 Q8_0, 1 Q4_0, 2 Q4_1, 3 Q4_K, 4 Q5_K, 5 Q6_K, 6 K16; K16's mins
// are [L, N, 2G] float32 like its scales) -> y [M, N] float32 whose first min(rows, M) rows are
// x @ dequantize(w[layer]) (element = d*q, d*(q-8), d*q + m) with float32 sums, the rest zero.
//
// Why: decode at small batch is bound by the bytes of weights read; Q4_1 is 20 bytes per 32 weights
// against float32's 128. Each group's codes are widened to float32 in registers and multiplied there,
// never written back. The offset terms factor out of the dot: sum_k x_k (d q_k + m) = d (x . q) + m sum_k x_k,
// so the per-group sums of x (computed once per call) carry Q4_1's m and Q4_0's -8d.
// Work is split into column blocks across XLA's intra-op pool; a column's codes are read from memory once
// and from L1 for each further tile of kTileRows rows.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TRELLIS_Q_VECTOR 1
#endif

#include "column_blocks.h"
#include "ffi_binding.h"
#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kGroup = 32;
constexpr int kTileRows = 8;  // 8 accumulators + 4 group vectors + 1 x load of the 16 ymm registers
enum Format : int32_t { kQ8_0 = 0, kQ4_0 = 1, kQ4_1 = 2, kQ4_K = 3, kQ5_K = 4, kQ6_K = 5, kK16 = 6 };
inline bool has_min(int32_t fmt) { return fmt == kQ4_1 || fmt == kQ4_K || fmt == kQ5_K; }
inline bool f32_factors(int32_t fmt) { return fmt >= kQ4_K; }
inline bool signed_bytes(int32_t fmt) { return fmt == kQ8_0 || fmt >= kQ6_K; }

float half_to_float(uint16_t h) {
#if defined(TRELLIS_Q_VECTOR)
  return _cvtsh_ss(h);
#else
  const uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  uint32_t bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = mantissa;
      do { ++e; m <<= 1; } while ((m & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((m & 0x3FF) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
#endif
}

// One group's 32 codes as float32 (q, before scale and offset), in element order.
#if defined(TRELLIS_Q_VECTOR)
struct Group {
  __m256 v[4];
};
inline Group load_group(const uint8_t* codes, int32_t fmt) {
  Group g;
  if (signed_bytes(fmt)) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    g.v[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
    g.v[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
    g.v[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
    g.v[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
    return g;
  }
  if (fmt == kQ5_K) {
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
    const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    g.v[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
    g.v[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
    g.v[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
    g.v[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
    return g;
  }
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes));
  const __m128i nibble = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, nibble), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), nibble);
  g.v[0] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo));
  g.v[1] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)));
  g.v[2] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi));
  g.v[3] = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)));
  return g;
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

inline float code(const uint8_t* codes, int32_t fmt, int j) {
  if (signed_bytes(fmt)) return static_cast<float>(static_cast<int8_t>(codes[j]));
  if (fmt == kQ5_K) return static_cast<float>(codes[j]);
  return static_cast<float>(j < 16 ? codes[j] & 0x0F : codes[j - 16] >> 4);
}

struct Problem {
  const float* x;        // [M, K]
  const float* x_sums;   // [M, G]: sum of x over each group
  const uint8_t* codes;  // the layer's [N, G, B]
  const void* scales;  // the layer's [N, G]: float16, or float32 where f32_factors(fmt)
  const void* mins;
  float* y;              // [M, N]
  int64_t M, K, N, G, B;
  int32_t fmt;
};

// y[m0 .. m0+MT) x column n, over all K (MT a compile-time count, so the accumulators stay in registers).
template <int MT>
void column_tile(const Problem& p, int64_t n, int64_t m0) {
  const uint8_t* codes = p.codes + n * p.G * p.B;
  const bool f32 = f32_factors(p.fmt), halves = p.fmt >= kQ6_K, k16 = p.fmt == kK16;
  const int64_t per_column = halves ? 2 * p.G : p.G;
  auto factor = [&](const void* base, int64_t g) {  // g: the index in the column's scales (or mins)
    const int64_t i = n * per_column + g;
    return f32 ? static_cast<const float*>(base)[i] : half_to_float(static_cast<const uint16_t*>(base)[i]);
  };
  float offset[MT] = {};
#if defined(TRELLIS_Q_VECTOR)
  __m256 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm256_setzero_ps();
#else
  float acc[MT] = {};
#endif
  for (int64_t g = 0; g < p.G; ++g, codes += p.B) {
    const float scale = factor(p.scales, halves ? 2 * g : g);
    const float scale_hi = halves ? factor(p.scales, 2 * g + 1) : scale;  // Q6_K/K16: elements 16..31
    const float min_lo = k16 ? factor(p.mins, 2 * g) : 0.f, min_hi = k16 ? factor(p.mins, 2 * g + 1) : 0.f;
    const float shift = has_min(p.fmt) ? factor(p.mins, g) : p.fmt == kQ4_0 ? -8.f * scale : 0.f;
#if defined(TRELLIS_Q_VECTOR)
    const Group q = load_group(codes, p.fmt);
    const __m256 s = _mm256_set1_ps(scale);
    for (int r = 0; r < MT; ++r) {
      const float* xr = p.x + (m0 + r) * p.K + g * kGroup;
      __m256 t = _mm256_mul_ps(_mm256_loadu_ps(xr), q.v[0]);
      t = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 8), q.v[1], t);
      if (halves) {  // two scales a group: close the first 16 elements' sum
        acc[r] = _mm256_fmadd_ps(s, t, acc[r]);
        t = _mm256_mul_ps(_mm256_loadu_ps(xr + 16), q.v[2]);
        t = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 24), q.v[3], t);
        acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(scale_hi), t, acc[r]);
        if (k16) {  // a min per 16 elements: m times their x sum, in registers
          const __m256 lo = _mm256_add_ps(_mm256_loadu_ps(xr), _mm256_loadu_ps(xr + 8));
          const __m256 hi = _mm256_add_ps(_mm256_loadu_ps(xr + 16), _mm256_loadu_ps(xr + 24));
          acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(min_lo), lo, acc[r]);
          acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(min_hi), hi, acc[r]);
        }
        continue;  // no per-32 offset term (shift is 0)
      }
      t = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 16), q.v[2], t);
      t = _mm256_fmadd_ps(_mm256_loadu_ps(xr + 24), q.v[3], t);
      acc[r] = _mm256_fmadd_ps(s, t, acc[r]);
      offset[r] += shift * p.x_sums[(m0 + r) * p.G + g];
    }
#else
    for (int r = 0; r < MT; ++r) {
      const float* xr = p.x + (m0 + r) * p.K + g * kGroup;
      float t = 0.f, t_hi = 0.f, x_lo = 0.f, x_hi = 0.f;
      for (int j = 0; j < kGroup; ++j) {
        (j < 16 ? t : t_hi) += xr[j] * code(codes, p.fmt, j);
        (j < 16 ? x_lo : x_hi) += xr[j];
      }
      acc[r] += scale * t + scale_hi * t_hi + min_lo * x_lo + min_hi * x_hi;
      offset[r] += shift * p.x_sums[(m0 + r) * p.G + g];
    }
#endif
  }
  for (int r = 0; r < MT; ++r) {
#if defined(TRELLIS_Q_VECTOR)
    p.y[(m0 + r) * p.N + n] = hsum(acc[r]) + offset[r];
#else
    p.y[(m0 + r) * p.N + n] = acc[r] + offset[r];
#endif
  }
}

// The last tile of rows may be short: pick the tile with exactly that many rows.
template <int MT>
void column_rows(const Problem& p, int64_t n, int64_t m0, int rows) {
  if constexpr (MT > 1)
    if (rows < MT) return column_rows<MT - 1>(p, n, m0, rows);
  column_tile<MT>(p, n, m0);
}

ffi::Error LayerMatmulQ(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::AnyBuffer codes, ffi::AnyBuffer scales,
                        ffi::AnyBuffer mins, ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::S32> rows, int32_t fmt,
                        ffi::ResultBuffer<ffi::F32> y) {
  auto x_dims = x.dimensions();
  auto c_dims = codes.dimensions();
  auto s_dims = scales.dimensions();
  if (fmt < kQ8_0 || fmt > kK16) return ffi::Error::InvalidArgument("layer_matmul_q: fmt must be 0 to 6");
  const int64_t B = fmt == kQ8_0 || fmt >= kQ5_K ? 32 : 16;
  const int64_t scales_per_group = fmt >= kQ6_K ? 2 : 1;  // Q6_K passes its scales as mins
  const ffi::DataType factor_type = f32_factors(fmt) ? ffi::DataType::F32 : ffi::DataType::F16;
  const int64_t factor_bytes = f32_factors(fmt) ? 4 : 2;
  if (x_dims.size() != 2 || c_dims.size() != 4 || c_dims[3] != B || x_dims[1] != c_dims[2] * kGroup ||
      s_dims.size() != 3 || s_dims[0] != c_dims[0] || s_dims[1] != c_dims[1] || s_dims[2] != c_dims[2] * scales_per_group ||
      mins.dimensions().size() != 3 || scales.element_type() != factor_type || mins.element_type() != factor_type ||
      (fmt == kK16 && mins.dimensions()[2] != c_dims[2] * 2))
    return ffi::Error::InvalidArgument(
        "layer_matmul_q: x must be [M, K], codes [L, N, K/32, 32 or 16], scales and mins [L, N, K/32] float16 "
        "(float32 for Q4_K/Q5_K; scales [L, N, K/16] float32 for Q6_K)");
  const int64_t L = c_dims[0], N = c_dims[1], G = c_dims[2], K = x_dims[1];
  const int64_t layer_id = layer.typed_data()[0];
  if (layer_id < 0 || layer_id >= L) return ffi::Error::InvalidArgument("layer_matmul_q: layer out of range");
  const int64_t M = std::clamp<int64_t>(rows.typed_data()[0], 0, x_dims[0]);
  float* ys = y->typed_data();
  std::fill(ys + M * N, ys + x_dims[0] * N, 0.f);
  if (M == 0) return ffi::Error::Success();
  const float* xs = x.typed_data();
  std::vector<float> x_sums(M * G);
  for (int64_t m = 0; m < M; ++m)
    for (int64_t g = 0; g < G; ++g) {
      float s = 0.f;
      for (int64_t j = 0; j < kGroup; ++j) s += xs[m * K + g * kGroup + j];
      x_sums[m * G + g] = s;
    }
  const Problem p{xs,
                  x_sums.data(),
                  static_cast<const uint8_t*>(codes.untyped_data()) + layer_id * N * G * B,
                  static_cast<const char*>(scales.untyped_data()) + layer_id * N * G * scales_per_group * factor_bytes,
                  static_cast<const char*>(mins.untyped_data()) + layer_id * N * G * scales_per_group * factor_bytes,
                  ys, M, K, N, G, B, fmt};
  const trellis::ColumnBlocks blocks = trellis::column_blocks(M, K, N, 1, pool.num_threads(), 16);
  auto run_block = [&](int64_t i) {
    const int64_t n0 = i * blocks.width, n1 = std::min<int64_t>(N, n0 + blocks.width);
    for (int64_t n = n0; n < n1; ++n)  // a column's codes come from memory once, then from L1 per tile
      for (int64_t m0 = 0; m0 < M; m0 += kTileRows)
        column_rows<kTileRows>(p, n, m0, static_cast<int>(std::min<int64_t>(kTileRows, M - m0)));
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
