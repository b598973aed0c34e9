// y = x @ w[layer] for stacked layer weights, as an XLA FFI custom call (target "trellis_layer_matmul").
//
// Contract (pallas_kernels/layer_matmul.py is the only caller): x [M, K] float32, w [L, K, N] float32
// or [L, S, K, W] float32 (the same weights cut into S strips of W columns, each stored whole:
// layer_matmul.pack_strips; W a multiple of 16, or S = 1), layer int32[], rows int32[] -> y [M, N = S*W]
// float32 whose first min(rows, M) rows are x @ w[layer] and the rest zero. The weights are read straight
// out of the stacked array (once per 512 rows); `rows` lets a step padded to its bucket skip the padding
// (a batch-1 decode pads to 8 rows).
//
// Why it exists: inside the model's scan over layers, XLA:CPU copies each layer's weights out of the
// stacked array (a dynamic-slice) before its dot, which doubled the bytes a batch-1 decode step moves
// (docs/benchmarks/runner-raw-speed.md). Here the layer index is just a pointer offset.
// Work is split into column blocks (parallel only when a matrix is big enough to repay waking XLA's
// intra-op pool). A block is done strip by
// strip: a strip is a few vectors of columns; groups of rows keep their strip's sums in registers over all
// of K and store them once. The strip's weights come from memory for the first group, from L1/L2 for the
// others, and meanwhile every group prefetches the next strip: without that prefetch the column-strided
// rows stall the cores ("The strip matmul kernel"). Strips stored whole turn each vector's walk down K
// into one sequential read, which a weight-bound decode step needs ("Weights stored as strips"; both in
// docs/benchmarks/runner-raw-speed.md).
#include <algorithm>
#include <cstdint>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "column_blocks.h"
#include "parallel_for.h"
#include "ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kRowBlock = 512;  // rows per pass over a block's strips

#if defined(__AVX512F__)
// 8 rows x 3 vectors: 24 accumulators + 3 weights + 1 broadcast of the 32 zmm registers.
namespace simd {
using Vec = __m512;
using Mask = __mmask16;
constexpr int kLanes = 16, kTileRows = 8, kTileVectors = 3;
inline Mask mask_for(int64_t left) {
  return static_cast<Mask>(left >= kLanes ? 0xFFFF : left > 0 ? (1u << left) - 1 : 0);
}
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void store(float* p, Mask m, Vec v) { _mm512_mask_storeu_ps(p, m, v); }
inline Vec broadcast(float v) { return _mm512_set1_ps(v); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
}  // namespace simd
#elif defined(__AVX2__) && defined(__FMA__)
// AVX2 + FMA (most laptops and desktops without AVX-512): 4 rows x 3 vectors: 12 accumulators + 3 weights
// + 1 broadcast of the 16 ymm registers.
namespace simd {
using Vec = __m256;
using Mask = __m256i;
constexpr int kLanes = 8, kTileRows = 4, kTileVectors = 3;
inline Mask mask_for(int64_t left) {
  const int lanes = static_cast<int>(std::clamp<int64_t>(left, 0, kLanes));
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec load(const float* p, Mask m) { return _mm256_maskload_ps(p, m); }
inline void store(float* p, Mask m, Vec v) { _mm256_maskstore_ps(p, m, v); }
inline Vec broadcast(float v) { return _mm256_set1_ps(v); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
}  // namespace simd
#endif

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
constexpr int kStripVectors = simd::kTileVectors;
constexpr int64_t kStrip = simd::kLanes * kStripVectors;  // columns per strip
constexpr int64_t kBlockAlign = kStrip;                      // column blocks hold whole register strips

// y[m0 .. m0+MT) x strip [n, n + kStrip) = x rows @ w columns over all K, in registers. Vector v's
// weights start at w + v * stride and advance `step` per row; `next` (or null) is the following strip's
// (same stride), prefetched into L2 while this one computes.
template <int MT>
void strip_tile(const float* x, const float* w, int64_t stride, int64_t step, const float* next, float* y,
                int64_t K, int64_t N, int64_t m0, int64_t n, const simd::Mask* mask) {
  simd::Vec r[MT][kStripVectors];
  for (int m = 0; m < MT; ++m)
    for (int v = 0; v < kStripVectors; ++v) r[m][v] = simd::zero();
  const float* xm0 = x + m0 * K;
  const float* wk = w;
  for (int64_t k = 0; k < K; ++k, wk += step) {
    if (next)  // the next strip's row k, one prefetch per vector (a 64-byte line on AVX-512)
      for (int v = 0; v < kStripVectors; ++v)
        _mm_prefetch(reinterpret_cast<const char*>(next + k * step + v * stride), _MM_HINT_T1);
    simd::Vec wv[kStripVectors];
    for (int v = 0; v < kStripVectors; ++v) wv[v] = simd::load(wk + v * stride, mask[v]);
    for (int m = 0; m < MT; ++m) {
      const simd::Vec xm = simd::broadcast(xm0[m * K + k]);
      for (int v = 0; v < kStripVectors; ++v) r[m][v] = simd::fma(xm, wv[v], r[m][v]);
    }
  }
  for (int m = 0; m < MT; ++m)
    for (int v = 0; v < kStripVectors; ++v) simd::store(y + (m0 + m) * N + n + simd::kLanes * v, mask[v], r[m][v]);
}

// The last group of rows may be short: pick the tile with exactly that many rows.
template <int MT>
void strip_rows(const float* x, const float* w, int64_t stride, int64_t step, const float* next, float* y,
                int64_t K, int64_t N, int64_t m0, int64_t rows, int64_t n, const simd::Mask* mask) {
  if constexpr (MT > 1)
    if (rows < MT) return strip_rows<MT - 1>(x, w, stride, step, next, y, K, N, m0, rows, n, mask);
  strip_tile<MT>(x, w, stride, step, next, y, K, N, m0, n, mask);
}

// Columns [n0, n0 + width) of all M rows, tile by tile (trellis::for_each_tile).
void column_block(const float* x, const float* w, float* y, trellis::StripLayout layout, int64_t M, int64_t K,
                  int64_t N, int64_t n0, int64_t width) {
  const int64_t end = n0 + width, step = layout.row_step();
  trellis::for_each_tile(M, n0, width, kStrip, simd::kTileRows, kRowBlock, [&](int64_t m0, int64_t rows, int64_t n,
                                                                              bool has_next) {
    simd::Mask mask[kStripVectors];
    for (int v = 0; v < kStripVectors; ++v) mask[v] = simd::mask_for(end - n - simd::kLanes * v);
    const trellis::VectorRun run = trellis::vector_run(layout, n, end, simd::kLanes, kStripVectors);
    if (run.uniform) {
      const trellis::VectorRun after = trellis::vector_run(layout, n + kStrip, end, simd::kLanes, kStripVectors);
      const bool prefetch = has_next && after.uniform && after.stride == run.stride;
      strip_rows<simd::kTileRows>(x, w + run.base, run.stride, step, prefetch ? w + after.base : nullptr, y, K, N, m0,
                                  rows, n, mask);
      return;
    }
    for (int v = 0; v < kStripVectors; ++v) {  // a tile straddling strips: one vector at a time
      simd::Mask one[kStripVectors];
      for (int u = 0; u < kStripVectors; ++u) one[u] = u == v ? mask[v] : simd::mask_for(0);
      const int64_t column = std::min(n + simd::kLanes * v, N - 1);
      strip_rows<simd::kTileRows>(x, w + layout.offset(column), 0, step, nullptr, y, K, N, m0, rows, n, one);
    }
  });
}
#else
constexpr int64_t kBlockAlign = 16;

// Portable loops: each weight row is read once per block and added into every output row, a stored strip
// at a time.
void column_block(const float* x, const float* w, float* y, trellis::StripLayout layout, int64_t M, int64_t K,
                  int64_t N, int64_t n0, int64_t width) {
  for (int64_t m = 0; m < M; ++m) std::fill(y + m * N + n0, y + m * N + n0 + width, 0.f);
  for (int64_t c0 = n0; c0 < n0 + width;) {
    const int64_t c1 = std::min(n0 + width, (c0 / layout.width + 1) * layout.width);  // this strip's part
    for (int64_t k = 0; k < K; ++k)
      for (int64_t m = 0; m < M; ++m) {
        const float xm = x[m * K + k];
        const float* wk = w + layout.offset(c0) + k * layout.row_step();
        float* ym = y + m * N + c0;
#pragma omp simd
        for (int64_t n = 0; n < c1 - c0; ++n) ym[n] += xm * wk[n];
      }
    c0 = c1;
  }
}
#endif

ffi::Error LayerMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::S32> rows, ffi::ResultBuffer<ffi::F32> y) {
  auto x_dims = x.dimensions();
  auto w_dims = w.dimensions();
  const bool strips = w_dims.size() == 4;  // [L, S, K, W], else [L, K, N]
  if (x_dims.size() != 2 || (w_dims.size() != 3 && !strips) || x_dims[1] != w_dims[strips ? 2 : 1] ||
      (strips && w_dims[3] % 16 != 0 && w_dims[1] != 1))
    return ffi::Error::InvalidArgument(
        "layer_matmul: x must be [M, K] and w [L, K, N] or [L, S, K, W] (W a multiple of 16, or S = 1)");
  const int64_t K = x_dims[1], N = strips ? w_dims[1] * w_dims[3] : w_dims[2];
  const trellis::StripLayout layout{K, strips ? w_dims[3] : N, 1};
  const int64_t M = std::clamp<int64_t>(rows.typed_data()[0], 0, x_dims[0]);  // rows past M: zeros
  const int64_t layer_id = layer.typed_data()[0];
  if (layer_id < 0 || layer_id >= w_dims[0]) return ffi::Error::InvalidArgument("layer_matmul: layer out of range");
  const float* w_layer = w.typed_data() + layer_id * K * N;
  const float* xs = x.typed_data();
  float* ys = y->typed_data();
  std::fill(ys + M * N, ys + x_dims[0] * N, 0.f);
  if (M == 0) return ffi::Error::Success();
  const trellis::ColumnBlocks blocks =
      trellis::column_blocks(M, K, N, sizeof(float), pool.num_threads(), kBlockAlign);
  auto run_block = [&](int64_t i) {
    const int64_t n0 = i * blocks.width;
    if (n0 < N) column_block(xs, w_layer, ys, layout, M, K, N, n0, std::min<int64_t>(blocks.width, N - n0));
  };
  trellis::parallel_for(pool, blocks.count, run_block);  // one block: runs here, wakes no helper
  return ffi::Error::Success();
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisLayerMatmul, LayerMatmul);

// Whether this build has a register-tiled path (AVX-512, or AVX2 + FMA). The portable loops were measured
// 1.1-2.4x slower than XLA for 2+ rows (docs/benchmarks/runner-raw-speed.md, "Machines without AVX-512"),
// so the Python side only uses this kernel when it does.
extern "C" int TrellisLayerMatmulIsVectorized() {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  return 1;
#else
  return 0;
#endif
}

// Up to how many rows this build was measured faster than XLA's GEMM (0: any). AVX-512 beat XLA from 1
// to 1024 rows (docs/benchmarks/runner-raw-speed.md, "The strip matmul kernel"); the AVX2 path was only
// measured against XLA up to 64 rows.
extern "C" int TrellisLayerMatmulPreferredMaxRows() {
#if defined(__AVX512F__)
  return 0;
#else
  return 64;
#endif
}
