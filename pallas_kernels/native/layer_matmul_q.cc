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
enum Format : int32_t { kQ8_0 = 0, kQ4_0 = 1, kQ4_1 = 2, kQ4_K = 3, kQ5_K = 4, kQ6_K = 5 };
inline bool has_min(int32_t fmt) { return fmt == kQ4_1 || fmt == kQ4_K || fmt == kQ5_K; }
inline bool k_quant(int32_t fmt) { return fmt == kQ4_K || fmt == kQ5_K || fmt == kQ6_K; }
inline bool signed_bytes(int32_t fmt) { return fmt == kQ8_0; }
inline int64_t code_bytes(int32_t fmt) {
  return fmt == kQ6_K ? 24 : fmt == kQ8_0 || fmt == kQ5_K ? 32 : 16;
}

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
  __m256i q[4] = {_mm256_cvtepu8_epi32(lo), _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)),
                  _mm256_cvtepu8_epi32(hi), _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))};
  if (fmt == kQ6_K) {  // the high 2 bits of element j at byte 16 + j % 8, bits 2 * (j / 8); then q - 32
    const __m256i top = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + 16)));
    for (int i = 0; i < 4; ++i) {
      const __m256i bits = _mm256_and_si256(_mm256_srli_epi32(top, 2 * i), _mm256_set1_epi32(3));
      q[i] = _mm256_sub_epi32(_mm256_or_si256(q[i], _mm256_slli_epi32(bits, 4)), _mm256_set1_epi32(32));
    }
  }
  for (int i = 0; i < 4; ++i) g.v[i] = _mm256_cvtepi32_ps(q[i]);
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
  const int low = j < 16 ? codes[j] & 0x0F : codes[j - 16] >> 4;
  if (fmt != kQ6_K) return static_cast<float>(low);
  return static_cast<float>((low | ((codes[16 + j % 8] >> (2 * (j / 8))) & 3) << 4) - 32);
}

struct Problem {
  const float* x;        // [M, K]
  const float* x_sums;   // [M, G]: sum of x over each group
  const uint8_t* codes;  // the layer's [N, G, B]
  const void* scales;  // the layer's [N, G] float16 (K-quants: [N, G/8, F] float16)
  const void* mins;    // the same as scales (K-quants: [N, G, 2] 8-bit integer factors)
  float* y;              // [M, N]
  int64_t M, K, N, G, B;
  int32_t fmt;
};

// y[m0 .. m0+MT) x column n, over all K (MT a compile-time count, so the accumulators stay in registers).
template <int MT>
void column_tile(const Problem& p, int64_t n, int64_t m0) {
  const uint8_t* codes = p.codes + n * p.G * p.B;
  const bool halves = p.fmt == kQ6_K;  // two scales a group, one per 16 elements
  auto factor = [&](const void* base, int64_t g) {  // g: the group's index in the column's scales (or mins)
    return half_to_float(static_cast<const uint16_t*>(base)[n * p.G + g]);
  };
  // K-quants: float32 d*sc and dmin*m from the super-block's float16 d, dmin and the group's sc, m (exact)
  const int64_t per_super = p.fmt == kQ6_K ? 1 : 2;
  const uint16_t* supers = static_cast<const uint16_t*>(p.scales) + n * (p.G / 8) * per_super;
  const uint8_t* group_ints = static_cast<const uint8_t*>(p.mins) + n * p.G * 2;
  auto k_factor = [&](int64_t g, int f, int i) {  // f: d (0) or dmin (1); i: the group's integer 0 or 1
    const uint8_t v = group_ints[2 * g + i];
    const float q = p.fmt == kQ6_K ? static_cast<float>(static_cast<int8_t>(v)) : static_cast<float>(v);
    return half_to_float(supers[(g / 8) * per_super + f]) * q;
  };
  float offset[MT] = {};
#if defined(TRELLIS_Q_VECTOR)
  __m256 acc[MT];
  for (int r = 0; r < MT; ++r) acc[r] = _mm256_setzero_ps();
#else
  float acc[MT] = {};
#endif
  for (int64_t g = 0; g < p.G; ++g, codes += p.B) {
    const bool kq = k_quant(p.fmt);
    const float scale = kq ? k_factor(g, 0, 0) : factor(p.scales, g);
    const float scale_hi = halves ? k_factor(g, 0, 1) : scale;  // Q6_K: elements 16..31's own scale
    const float shift = kq && p.fmt != kQ6_K ? -k_factor(g, 1, 1)
                        : has_min(p.fmt)     ? factor(p.mins, g)
                        : p.fmt == kQ4_0     ? -8.f * scale
                                             : 0.f;
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
      float t = 0.f, t_hi = 0.f;
      for (int j = 0; j < kGroup; ++j) {
        (j < 16 ? t : t_hi) += xr[j] * code(codes, p.fmt, j);
      }
      acc[r] += scale * t + scale_hi * t_hi;
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
                  static_cast<const char*>(scales.untyped_data()) + layer_id * (scales.size_bytes() / L),
                  static_cast<const char*>(mins.untyped_data()) + layer_id * (mins.size_bytes() / L),
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
