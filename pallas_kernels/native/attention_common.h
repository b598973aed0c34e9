// Pieces shared by the native paged-attention kernels (decode and extend): page geometry, the
// element conversions for float32 / bfloat16 pages, the AVX-512 exp, and the argument checks that keep
// host-supplied page ids and row offsets from being read out of bounds.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace trellis {

struct Geometry {
  int64_t num_kv_heads, num_pages, page_size, head_dim, group, max_pages;
};

inline float to_float(float x) { return x; }
inline float to_float(uint16_t bf16) {
  uint32_t bits = static_cast<uint32_t>(bf16) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

#if defined(__AVX512F__)
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const uint16_t* p) {
  __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// exp(x) for x <= 0 (softmax arguments; -inf and anything below -87 give ~1e-38, callers mask those),
// ~1 ulp: 2^n * p(r) with r in [-ln2/2, ln2/2].
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}
#endif

#if defined(__AVX2__) && defined(__FMA__)
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
  __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(raw), 16));
}

// exp(x) for x <= 0, as exp_nonpositive above with 8 lanes (2^n built in the exponent bits: no scalef).
inline __m256 exp_nonpositive8(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));  // n >= -126 here: a normal power of two
}
#endif

#if defined(__AVX512F__) || defined(__AVX2__)
// Asks for the K and V of page `pages[next]` to be brought into L2 while the current page is computed
// (pages are scattered, so the hardware prefetchers cannot guess the next one).
template <typename KV>
inline void prefetch_page(const KV* k_head, const KV* v_head, const int32_t* pages, int64_t next,
                          int64_t page_elems) {
  const char* k_next = reinterpret_cast<const char*>(k_head + pages[next] * page_elems);
  const char* v_next = reinterpret_cast<const char*>(v_head + pages[next] * page_elems);
  for (int64_t off = 0; off < page_elems * static_cast<int64_t>(sizeof(KV)); off += 64) {
    _mm_prefetch(k_next + off, _MM_HINT_T1);
    _mm_prefetch(v_next + off, _MM_HINT_T1);
  }
}
#endif

#if defined(__AVX512F__) || defined(__AVX2__)
// Asks for one row (`elems` values) of a page into L2.
template <typename KV>
inline void prefetch_row(const KV* row, int64_t elems) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t off = 0; off < elems * static_cast<int64_t>(sizeof(KV)); off += 64) _mm_prefetch(p + off, _MM_HINT_T1);
}
#endif

// Shape checks shared by the kernels; on success fills `geo`. `name` prefixes the error messages.
inline xla::ffi::Error check_geometry(const char* name, xla::ffi::Span<const int64_t> q_dims,
                                      xla::ffi::Span<const int64_t> k_dims, xla::ffi::Span<const int64_t> t_dims,
                                      Geometry& geo) {
  if (q_dims.size() != 3 || k_dims.size() != 5 || t_dims.size() != 2)
    return xla::ffi::Error::InvalidArgument(std::string(name) + ": q must be [T,Hq,D], pages [L,Hkv,P,S,D]");
  geo = Geometry{k_dims[1], k_dims[2], k_dims[3], k_dims[4], q_dims[1] / k_dims[1], t_dims[1]};
  if (q_dims[2] != geo.head_dim || q_dims[1] % geo.num_kv_heads || geo.head_dim > 256 ||
      geo.group * geo.page_size > 1024)
    return xla::ffi::Error::InvalidArgument(std::string(name) + ": unsupported geometry");
  return xla::ffi::Error::Success();
}

// Row offsets and page ids come from the host scheduler: refuse bad ones rather than read out of bounds.
// Only the page-table entries a kernel can read are checked (those covering kv_lens[b]; the rest of the
// padded row is never touched), so the check costs what the context costs, every layer of every step.
inline xla::ffi::Error check_rows_and_pages(const char* name, const int32_t* cu, const int32_t* kv_lens,
                                            const int32_t* table, int64_t seqs, int64_t num_rows,
                                            const Geometry& geo) {
  for (int64_t b = 0; b < seqs; ++b) {
    if (cu[b] < 0 || cu[b + 1] > num_rows || cu[b + 1] < cu[b])
      return xla::ffi::Error::InvalidArgument(std::string(name) + ": cu_q_lens out of range");
    const int64_t used = std::clamp<int64_t>((kv_lens[b] + geo.page_size - 1) / geo.page_size, 0, geo.max_pages);
    for (const int32_t* page = table + b * geo.max_pages; page < table + b * geo.max_pages + used; ++page)
      if (*page < 0 || *page >= geo.num_pages)
        return xla::ffi::Error::InvalidArgument(std::string(name) + ": page id out of range");
  }
  return xla::ffi::Error::Success();
}

// The checked inputs of a paged-attention custom call (both kernels share the same operands).
struct PagedCall {
  Geometry geo;
  const float* q;
  int64_t layer, seqs;
  const int32_t *kv_lens, *table, *cu;
  float* out;
};

// Checks every operand, zero-fills `out` and fills `call`; then runs body(k, v) with the pages typed as
// float or uint16_t (bfloat16 bits). `name` prefixes the error messages.
template <typename Body>
xla::ffi::Error with_paged_call(const char* name, xla::ffi::Buffer<xla::ffi::F32> q, xla::ffi::AnyBuffer k_pages,
                                xla::ffi::AnyBuffer v_pages, xla::ffi::Buffer<xla::ffi::S32> layer,
                                xla::ffi::Buffer<xla::ffi::S32> kv_lens, xla::ffi::Buffer<xla::ffi::S32> page_table,
                                xla::ffi::Buffer<xla::ffi::S32> cu_q_lens, xla::ffi::Buffer<xla::ffi::S32> num_seqs,
                                xla::ffi::ResultBuffer<xla::ffi::F32>& out, PagedCall& call, Body&& body) {
  using xla::ffi::Error;
  if (k_pages.element_type() != v_pages.element_type())
    return Error::InvalidArgument(std::string(name) + ": k/v pages dtypes differ");
  if (auto error = check_geometry(name, q.dimensions(), k_pages.dimensions(), page_table.dimensions(), call.geo);
      error.failure())
    return error;
  call.q = q.typed_data();
  call.layer = layer.typed_data()[0];
  call.seqs = std::min<int64_t>(num_seqs.typed_data()[0], page_table.dimensions()[0]);
  if (call.layer < 0 || call.layer >= k_pages.dimensions()[0])
    return Error::InvalidArgument(std::string(name) + ": layer out of range");
  call.out = out->typed_data();
  std::fill(call.out, call.out + out->element_count(), 0.f);
  call.kv_lens = kv_lens.typed_data();
  call.cu = cu_q_lens.typed_data();
  call.table = page_table.typed_data();
  if (auto error = check_rows_and_pages(name, call.cu, call.kv_lens, call.table, call.seqs, q.dimensions()[0],
                                       call.geo);
      error.failure())
    return error;
  if (k_pages.element_type() == xla::ffi::F32) {
    body(k_pages.typed_data<float>(), v_pages.typed_data<float>());
  } else if (k_pages.element_type() == xla::ffi::BF16) {
    body(reinterpret_cast<const uint16_t*>(k_pages.untyped_data()),
         reinterpret_cast<const uint16_t*>(v_pages.untyped_data()));
  } else {
    return Error::InvalidArgument(std::string(name) + ": pages must be float32 or bfloat16");
  }
  return Error::Success();
}

}  // namespace trellis
