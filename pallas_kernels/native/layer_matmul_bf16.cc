// y = x @ w[layer] with bfloat16 operands and float32 sums, as an XLA FFI custom call
// (target "trellis_layer_matmul_bf16").
//
// Contract (pallas_kernels/layer_matmul.py is the only caller): x [M, K] bfloat16 with K even; w
// [L, S, K/2, W, 2] bfloat16, the stacked [L, K, N = S*W] weights cut into S strips of W columns, each
// strip stored whole (all its row pairs) before the next, rows 2i and 2i+1 interleaved per column
// (layer_matmul_bf16.pack_pairs); W is a multiple of 16 or all of N (S = 1); layer int32[], rows int32[]
// -> y [M, N] float32 whose first min(rows, M) rows are x @ w[layer] (exact products of the bf16 values,
// summed in float32) and the rest zero.
//
// Why: AVX512_BF16's vdpbf16ps does 32 bf16 multiply-adds per instruction where the float32 FMA does
// 16, and bf16 weights are half the bytes a decode step streams. The pair layout is what the
// instruction reads: lane n of a weight vector holds (w[2i][n], w[2i+1][n]) and row m's (x[m][2i],
// x[m][2i+1]) is one 32-bit broadcast. The loop structure is layer_matmul.cc's: strips of columns whose
// sums stay in registers over all of K, the next strip prefetched into L2. Storing each strip whole makes
// that walk over K one sequential read per 16-column vector instead of a 192-byte read per row pair at
// the matrix's row stride, which is what a decode step (bound by reading the weights) needs
// (docs/benchmarks/runner-raw-speed.md, "Weights stored as strips"). The tile takes one pointer and
// a vector stride: with a pointer per vector GCC kept the 24 accumulators on the stack.
#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "bf16.h"
#include "column_blocks.h"
#include "parallel_for.h"
#include "ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

#if defined(__AVX512BF16__) && defined(__AVX512F__)
constexpr int kTileRows = 8, kVectors = 3;  // 24 accumulators + 3 weight pairs + 1 broadcast
constexpr int64_t kStrip = 16 * kVectors;   // output columns per strip
constexpr int64_t kRowBlock = 512;          // rows per pass over a block's strips
constexpr int64_t kBlockAlign = kStrip;      // column blocks hold whole register strips

inline __m512bh as_bf16_pairs(__m512i v) { return reinterpret_cast<__m512bh&>(v); }

// y[m0 .. m0+MT) x strip [n, n + kStrip) over all K/2 row pairs. Vector v's weights start at
// w + v * stride and advance `step` per row pair; `next` (or null) is the following strip's (same stride).
template <int MT>
void strip_tile(const uint16_t* x, const uint16_t* w, int64_t stride, int64_t step, const uint16_t* next, float* y,
                int64_t K, int64_t N, int64_t m0, int64_t n, const __mmask16* mask) {
  __m512 r[MT][kVectors];
  for (int m = 0; m < MT; ++m)
    for (int v = 0; v < kVectors; ++v) r[m][v] = _mm512_setzero_ps();
  const uint16_t* wk = w;
  for (int64_t k2 = 0; k2 < K / 2; ++k2, wk += step) {
    if (next)  // one prefetch per 64-byte line (16 columns x 2 rows) of the next strip's row pair
      for (int v = 0; v < kVectors; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(next + k2 * step + v * stride), _MM_HINT_T1);
    __m512bh wv[kVectors];
    for (int v = 0; v < kVectors; ++v) wv[v] = as_bf16_pairs(_mm512_maskz_loadu_epi32(mask[v], wk + v * stride));
    for (int m = 0; m < MT; ++m) {
      int32_t pair;
      std::memcpy(&pair, x + (m0 + m) * K + 2 * k2, sizeof(pair));
      const __m512bh xm = as_bf16_pairs(_mm512_set1_epi32(pair));
      for (int v = 0; v < kVectors; ++v) r[m][v] = _mm512_dpbf16_ps(r[m][v], xm, wv[v]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int v = 0; v < kVectors; ++v) _mm512_mask_storeu_ps(y + (m0 + m) * N + n + 16 * v, mask[v], r[m][v]);
}

template <int MT>
void strip_rows(const uint16_t* x, const uint16_t* w, int64_t stride, int64_t step, const uint16_t* next, float* y,
                int64_t K, int64_t N, int64_t m0, int64_t rows, int64_t n, const __mmask16* mask) {
  if constexpr (MT > 1)
    if (rows < MT) return strip_rows<MT - 1>(x, w, stride, step, next, y, K, N, m0, rows, n, mask);
  strip_tile<MT>(x, w, stride, step, next, y, K, N, m0, n, mask);
}

// Columns [n0, n0 + width) of all M rows, tile by tile (trellis::for_each_tile).
void column_block(const uint16_t* x, const uint16_t* w, float* y, trellis::StripLayout layout, int64_t M, int64_t K,
                  int64_t N, int64_t n0, int64_t width) {
  const int64_t end = n0 + width, step = layout.row_step();
  trellis::for_each_tile(M, n0, width, kStrip, kTileRows, kRowBlock, [&](int64_t m0, int64_t rows, int64_t n,
                                                                         bool has_next) {
    __mmask16 mask[kVectors];
    for (int v = 0; v < kVectors; ++v) {
      const int64_t left = end - n - 16 * v;
      mask[v] = static_cast<__mmask16>(left >= 16 ? 0xFFFF : left > 0 ? (1u << left) - 1 : 0);
    }
    const trellis::VectorRun run = trellis::vector_run(layout, n, end, 16, kVectors);
    if (run.uniform) {
      const trellis::VectorRun after = trellis::vector_run(layout, n + kStrip, end, 16, kVectors);
      const bool prefetch = has_next && after.uniform && after.stride == run.stride;
      strip_rows<kTileRows>(x, w + run.base, run.stride, step, prefetch ? w + after.base : nullptr, y, K, N, m0, rows,
                            n, mask);
      return;
    }
    for (int v = 0; v < kVectors; ++v) {  // a tile straddling strips: one vector at a time
      __mmask16 one[kVectors] = {};
      one[v] = mask[v];
      strip_rows<kTileRows>(x, w + layout.offset(std::min(n + 16 * v, N - 1)), 0, step, nullptr, y, K, N, m0, rows,
                            n, one);
    }
  });
}
#else
constexpr int64_t kBlockAlign = 16;
using trellis::from_bf16;

// Portable loops (reference speed only: Python picks this kernel where AVX512_BF16 builds).
void column_block(const uint16_t* x, const uint16_t* w, float* y, trellis::StripLayout layout, int64_t M, int64_t K,
                  int64_t N, int64_t n0, int64_t width) {
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = n0; n < n0 + width; ++n) {
      const uint16_t* column = w + layout.offset(n);
      float sum = 0.f;
      for (int64_t k = 0; k < K; ++k)
        sum += from_bf16(x[m * K + k]) * from_bf16(column[(k / 2) * layout.row_step() + k % 2]);
      y[m * N + n] = sum;
    }
}
#endif

ffi::Error LayerMatmulBf16(ffi::ThreadPool pool, ffi::Buffer<ffi::BF16> x, ffi::Buffer<ffi::BF16> w,
                           ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::S32> rows, ffi::ResultBuffer<ffi::F32> y) {
  auto x_dims = x.dimensions();
  auto w_dims = w.dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 5 || w_dims[4] != 2 || x_dims[1] != 2 * w_dims[2] ||
      (w_dims[3] % 16 != 0 && w_dims[1] != 1))
    return ffi::Error::InvalidArgument(
        "layer_matmul_bf16: x must be [M, K] and w [L, S, K/2, W, 2] (K even; W a multiple of 16, or S = 1)");
  const int64_t K = x_dims[1], N = w_dims[1] * w_dims[3];
  const trellis::StripLayout layout{K / 2, w_dims[3], 2};
  const int64_t M = std::clamp<int64_t>(rows.typed_data()[0], 0, x_dims[0]);  // rows past M: zeros
  const int64_t layer_id = layer.typed_data()[0];
  if (layer_id < 0 || layer_id >= w_dims[0])
    return ffi::Error::InvalidArgument("layer_matmul_bf16: layer out of range");
  const auto* w_layer = reinterpret_cast<const uint16_t*>(w.untyped_data()) + layer_id * K * N;
  const auto* xs = reinterpret_cast<const uint16_t*>(x.untyped_data());
  float* ys = y->typed_data();
  std::fill(ys + M * N, ys + x_dims[0] * N, 0.f);
  if (M == 0) return ffi::Error::Success();
  const trellis::ColumnBlocks blocks =
      trellis::column_blocks(M, K, N, sizeof(uint16_t), pool.num_threads(), kBlockAlign);
  auto run_block = [&](int64_t i) {
    const int64_t n0 = i * blocks.width;
    if (n0 < N) column_block(xs, w_layer, ys, layout, M, K, N, n0, std::min<int64_t>(blocks.width, N - n0));
  };
  trellis::parallel_for(pool, blocks.count, run_block);
  return ffi::Error::Success();
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisLayerMatmulBf16, LayerMatmulBf16);

// Whether this build multiplies with AVX512_BF16 (the portable loops are far slower than XLA).
extern "C" int TrellisLayerMatmulBf16IsVectorized() {
#if defined(__AVX512BF16__) && defined(__AVX512F__)
  return 1;
#else
  return 0;
#endif
}
