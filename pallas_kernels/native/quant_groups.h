// How the quantized matmul (layer_matmul_q.cc) reads one 32-element group of GGUF codes: the formats'
// traits, each group's codes as four float32 vectors, and x prepared to match them.
//
// Contract: load_group<F>(codes, v) (the AVX2 + FMA + F16C build) sets v[0..3] to the group's 32 codes q
// (Q6_K: q - 32) in a fixed permuted order, position p = 8 * vector + lane holding element nibble_order(p)
// (Q4_0/Q4_1/Q4_K/Q6_K) or byte_order(p) (Q8_0/Q5_K), times position_factor(fmt, p)^-1 (a power of two,
// 1 but for Q4_0/Q4_1/Q4_K). prepare_x lays x out in that order times position_factor, so that
// x'[p] * v[p] is exactly the float x[element] * q, and sums each group of x. The portable build keeps
// element order and factors of 1 (code() reads one element).
//
// Why: widening a byte to a 32-bit lane with vpmovzx is a shuffle, and AVX2 shuffles share one or two
// ports; a per-lane shift and mask (or a mask alone, the position left in the value) reads each lane's
// code from its own 32-bit word with plain integer ops. The order is free: x is permuted once per call.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define TRELLIS_Q_VECTOR 1
#endif

namespace trellis::quant {

constexpr int64_t kGroup = 32;
enum Format : int32_t { kQ8_0 = 0, kQ4_0 = 1, kQ4_1 = 2, kQ4_K = 3, kQ5_K = 4, kQ6_K = 5 };
constexpr bool has_min(int32_t fmt) { return fmt == kQ4_1 || fmt == kQ4_K || fmt == kQ5_K; }
constexpr bool has_shift(int32_t fmt) { return has_min(fmt) || fmt == kQ4_0; }  // a per-group sum-of-x term
constexpr bool k_quant(int32_t fmt) { return fmt == kQ4_K || fmt == kQ5_K || fmt == kQ6_K; }
constexpr bool byte_codes(int32_t fmt) { return fmt == kQ8_0 || fmt == kQ5_K; }  // one byte per element
constexpr int64_t code_bytes(int32_t fmt) { return fmt == kQ6_K ? 24 : byte_codes(fmt) ? 32 : 16; }
constexpr int scale_width(int32_t fmt) { return fmt == kQ6_K ? 8 : 1; }  // floats of scale per group

// The element of a group that position p = 8 * v + lane of its four vectors holds (v: vector, lane: 0..7).
// Nibble formats: lane i < 4 is the low nibble of byte 4i + v (element 4i + v), lane 4 + i its high nibble
// (element 16 + 4i + v). Byte formats: lane i is byte 4i + v (element 4i + v).
constexpr int nibble_order(int p) { return (p % 8 < 4 ? 4 * (p % 8) : 16 + 4 * (p % 8 - 4)) + p / 8; }
constexpr int byte_order(int p) { return 4 * (p % 8) + p / 8; }

inline float half_to_float(uint16_t h) {
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

// Element j of a group's codes as a float (q, before scale and offset), in element order.
inline float code(const uint8_t* codes, int32_t fmt, int j) {
  if (fmt == kQ8_0) return static_cast<float>(static_cast<int8_t>(codes[j]));
  if (fmt == kQ5_K) return static_cast<float>(codes[j]);
  const int low = j < 16 ? codes[j] & 0x0F : codes[j - 16] >> 4;
  if (fmt != kQ6_K) return static_cast<float>(low);
  return static_cast<float>((low | ((codes[16 + j % 8] >> (2 * (j / 8))) & 3) << 4) - 32);
}

#if defined(TRELLIS_Q_VECTOR)
// One group's 32 codes as four float32 vectors (q, before scale and offset; Q6_K: q - 32) in the format's
// permuted order, each lane cut from a 32-bit word of the codes by a shift and a mask (no shuffles).
template <int32_t F>
inline void load_group(const uint8_t* codes, __m256 (&v)[4]) {
  if constexpr (F == kQ8_0) {  // sign-extend byte k of each word: shift it to the top, then back down
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
    v[0] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(w, 24), 24));
    v[1] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(w, 16), 24));
    v[2] = _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(w, 8), 24));
    v[3] = _mm256_cvtepi32_ps(_mm256_srai_epi32(w, 24));
  } else if constexpr (F == kQ5_K) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
    const __m256i byte = _mm256_set1_epi32(0xFF);
    v[0] = _mm256_cvtepi32_ps(_mm256_and_si256(w, byte));
    v[1] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(w, 8), byte));
    v[2] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(w, 16), byte));
    v[3] = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 24));
  } else if constexpr (F != kQ6_K) {  // mask only: lane values are q * 2^(position), x carries 2^-(position)
    const __m256i w = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    const __m256i w16 = _mm256_srli_epi32(w, 16);  // bytes 2 and 3 of each word, moved to 0 and 1
    const __m256i lo = _mm256_setr_epi32(0xF, 0xF, 0xF, 0xF, 0xF0, 0xF0, 0xF0, 0xF0);
    const __m256i hi = _mm256_setr_epi32(0xF00, 0xF00, 0xF00, 0xF00, 0xF000, 0xF000, 0xF000, 0xF000);
    v[0] = _mm256_cvtepi32_ps(_mm256_and_si256(w, lo));
    v[1] = _mm256_cvtepi32_ps(_mm256_and_si256(w, hi));
    v[2] = _mm256_cvtepi32_ps(_mm256_and_si256(w16, lo));
    v[3] = _mm256_cvtepi32_ps(_mm256_and_si256(w16, hi));
  } else {  // Q6_K: 16 nibble bytes in both halves; lanes 4..7 take the high nibble of the byte lanes 0..3 do
    const __m256i w = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    const __m256i nibble = _mm256_set1_epi32(0x0F);
    __m256i q[4];
    for (int k = 0; k < 4; ++k)
      q[k] = _mm256_and_si256(_mm256_srlv_epi32(w, _mm256_setr_epi32(8 * k, 8 * k, 8 * k, 8 * k, 8 * k + 4,
                                                                      8 * k + 4, 8 * k + 4, 8 * k + 4)),
                              nibble);
    {  // high 2 bits of element e at byte 16 + e % 8, bits 2 * (e / 8); then q - 32
      int64_t high;
      std::memcpy(&high, codes + 16, sizeof high);
      const __m256i top = _mm256_set1_epi64x(high);  // 32-bit words: bytes 16..19, 20..23, 16..19, ...
      for (int k = 0; k < 4; ++k) {
        const __m256i bits = _mm256_and_si256(
            _mm256_srlv_epi32(top, _mm256_setr_epi32(8 * k, 8 * k, 8 * k + 2, 8 * k + 2, 8 * k + 4, 8 * k + 4,
                                                     8 * k + 6, 8 * k + 6)),
            _mm256_set1_epi32(3));
        q[k] = _mm256_sub_epi32(_mm256_or_si256(q[k], _mm256_slli_epi32(bits, 4)), _mm256_set1_epi32(32));
      }
    }
    for (int k = 0; k < 4; ++k) v[k] = _mm256_cvtepi32_ps(q[k]);
  }
}
#endif

// The power of two a position's x carries in the vector build: Q4_0/Q4_1/Q4_K codes are masked in place
// (load_group), so lane p's code arrives as q * 2^(8 * (vector % 2) + 4 * (lane >= 4)); x is scaled by the
// inverse, exactly (a power of two), and each product x * q is the same float as unscaled.
inline float position_factor(int32_t fmt, int p) {
#if defined(TRELLIS_Q_VECTOR)
  if (!byte_codes(fmt) && fmt != kQ6_K) return 1.f / static_cast<float>(1 << (8 * ((p / 8) % 2) + 4 * (p % 8 >= 4)));
#endif
  return 1.f;
}

// x [M, K] -> out [M, K], each group's 32 elements in the format's vector order (the vector build; else
// copied as is) times position_factor, and sums [M, G] of each group. A row whose largest |x| is below
// 2^-100 is first scaled by 2^100 (exact), so that the factors down to 2^-12 keep every bit of it (no
// subnormals); unscale[m] is then 2^-100, by which its outputs are multiplied back (else 1).
inline void prepare_x(const float* x, int64_t M, int64_t K, int32_t fmt, float* out, float* sums, float* unscale) {
  int order[kGroup];
  float factor[kGroup];
  for (int p = 0; p < kGroup; ++p) {
#if defined(TRELLIS_Q_VECTOR)
    order[p] = byte_codes(fmt) ? byte_order(p) : nibble_order(p);
#else
    order[p] = p;
#endif
    factor[p] = position_factor(fmt, p);
  }
  constexpr float kTiny = 0x1p-100f, kUp = 0x1p100f;
  const int64_t G = K / kGroup;
  for (int64_t m = 0; m < M; ++m) {
    float largest = 0.f;
    for (int64_t k = 0; k < K; ++k) largest = std::max(largest, std::abs(x[m * K + k]));
    const float row = largest > 0.f && largest < kTiny ? kUp : 1.f;
    unscale[m] = 1.f / row;
    for (int64_t g = 0; g < G; ++g) {
      const float* in = x + m * K + g * kGroup;
      float s = 0.f;
      for (int j = 0; j < kGroup; ++j) s += in[j] * row;
      for (int p = 0; p < kGroup; ++p) out[m * K + g * kGroup + p] = in[order[p]] * row * factor[p];
      sums[m * G + g] = s;
    }
  }
}

}  // namespace trellis::quant
