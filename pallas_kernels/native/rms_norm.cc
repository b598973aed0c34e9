// RMSNorm of rows, as an XLA FFI custom call (target "trellis_rms_norm").
//
// Contract (pallas_kernels/rms_norm.py is the only caller): x [T, H] float32 or bfloat16, weight [H] of
// the same dtype, attribute eps -> y [T, H] of that dtype, row by row exactly the reference's
// arithmetic: n = x * rsqrt(mean(x^2) + eps) in float32, rounded to the dtype, then y = weight * n
// rounded to the dtype (XLA's bf16 multiply: a float32 product, rounded). Sums may differ from XLA's in
// order, so results agree to float32 rounding, not bit for bit.
//
// Why it exists: in a CPU decode step each norm of a few rows was three XLA ops (sum of squares, rsqrt,
// scale), each split across the intra-op pool and paying its wake-up: ~1.1-1.5 ms of a ~13 ms bf16 decode
// step for the 61 norms (docs/benchmarks/runner-raw-speed.md, "RMSNorm kernel"). One call on one thread
// costs a few microseconds.
#include <cmath>
#include <cstdint>

#include "bf16.h"
#include "ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const uint16_t* p, int64_t i) { return trellis::from_bf16(p[i]); }
inline float round_to(float, float v) { return v; }
inline float round_to(uint16_t, float v) { return trellis::from_bf16(trellis::to_bf16(v)); }
inline void store(float* p, int64_t i, float v) { p[i] = v; }
inline void store(uint16_t* p, int64_t i, float v) { p[i] = trellis::to_bf16(v); }

template <typename T>
void norm_rows(const T* x, const T* weight, T* y, int64_t rows, int64_t H, float eps) {
  for (int64_t t = 0; t < rows; ++t) {
    const T* row = x + t * H;
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t h = 0; h < H; ++h) {
      const float v = load(row, h);
      sum += v * v;
    }
    const float scale = 1.f / std::sqrt(sum / static_cast<float>(H) + eps);
    T* out = y + t * H;
#pragma omp simd
    for (int64_t h = 0; h < H; ++h) store(out, h, load(weight, h) * round_to(T{}, load(row, h) * scale));
  }
}

ffi::Error RmsNorm(ffi::AnyBuffer x, ffi::AnyBuffer weight, float eps, ffi::Result<ffi::AnyBuffer> y) {
  auto dims = x.dimensions();
  const auto type = x.element_type();
  if (dims.size() != 2 || weight.dimensions().size() != 1 || weight.dimensions()[0] != dims[1] ||
      weight.element_type() != type || y->element_type() != type || (type != ffi::F32 && type != ffi::BF16))
    return ffi::Error::InvalidArgument("rms_norm: x must be [T, H] and weight [H], both float32 or both bfloat16");
  if (type == ffi::F32)
    norm_rows(static_cast<const float*>(x.untyped_data()), static_cast<const float*>(weight.untyped_data()),
              static_cast<float*>(y->untyped_data()), dims[0], dims[1], eps);
  else
    norm_rows(static_cast<const uint16_t*>(x.untyped_data()), static_cast<const uint16_t*>(weight.untyped_data()),
              static_cast<uint16_t*>(y->untyped_data()), dims[0], dims[1], eps);
  return ffi::Error::Success();
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisRmsNorm, RmsNorm, "eps");
