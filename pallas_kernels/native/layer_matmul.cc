// y = x @ w[layer] for stacked layer weights, as an XLA FFI custom call (target "trellis_layer_matmul").
//
// Contract (pallas_kernels/layer_matmul.py is the only caller): x [M, K] float32 (M <= 64), w [L, K, N] float32,
// layer int32[], rows int32[] -> y [M, N] float32 whose first min(rows, M) rows are x @ w[layer] and the
// rest zero. Meant for small M (decode steps): the weights are streamed once, straight out of the stacked
// array; `rows` lets a step padded to its bucket skip the padding (a batch-1 decode pads to 8 rows).
//
// Why it exists: inside the model's scan over layers, XLA:CPU copies each layer's weights out of the
// stacked array (a dynamic-slice) before its dot, which doubled the bytes a batch-1 decode step moves
// (BENCHMARKS.md). Here the layer index is just a pointer offset. Work is split into column blocks
// (parallel only when a matrix is big enough to repay waking XLA's intra-op pool); each block streams its
// weight rows in order and keeps the M x block accumulators in L1.
#include <algorithm>
#include <cstdint>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 1024;                // output columns per task (accumulators: M x 4 KB)
constexpr int64_t kRowsPerBlock = 16;           // weight rows streamed together
constexpr int64_t kPrefetchColumns = 256;       // how far ahead in each weight row to prefetch
constexpr int64_t kParallelBytes = 512 * 1024;  // weight bytes per task before splitting pays
constexpr int64_t kParallelMacs = 1 << 20;      // or multiply-adds per task (many rows, small matrices)

#if defined(__AVX512F__)
// Rows [m0, m0 + MT) x columns [n0, n0 + width) accumulate over weight rows [k0, k0 + kb) in registers
// (MT x 32 columns), then add into `acc` (MT x width, in L1). The kb weight rows are read as kb
// sequential streams, 128 bytes at a time, which the hardware prefetcher follows.
template <int MT>
void k_block_avx512(const float* x, const float* w, int64_t K, int64_t N, int64_t m0, int64_t n0, int64_t width,
                    int64_t k0, int64_t kb, float* acc) {
  for (int64_t n = 0; n < width; n += 32) {
    const int64_t left = width - n;
    const __mmask16 lo = static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1u << left) - 1);
    const __mmask16 hi = static_cast<__mmask16>(left >= 32 ? 0xFFFF : left > 16 ? (1u << (left - 16)) - 1 : 0);
    __m512 r[MT][2];
    for (int m = 0; m < MT; ++m) r[m][0] = r[m][1] = _mm512_setzero_ps();
    const float* wk = w + k0 * N + n0 + n;
    const float* xk = x + m0 * K + k0;
    const bool prefetch = n + kPrefetchColumns + 32 <= width;
    for (int64_t k = 0; k < kb; ++k, wk += N) {
      if (prefetch) {  // the same rows, a few strips ahead: 16 streams are more than the prefetcher follows
        _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchColumns), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchColumns + 16), _MM_HINT_T0);
      }
      const __m512 w0 = _mm512_maskz_loadu_ps(lo, wk);
      const __m512 w1 = _mm512_maskz_loadu_ps(hi, wk + 16);
      for (int m = 0; m < MT; ++m) {
        const __m512 xm = _mm512_set1_ps(xk[m * K + k]);
        r[m][0] = _mm512_fmadd_ps(xm, w0, r[m][0]);
        r[m][1] = _mm512_fmadd_ps(xm, w1, r[m][1]);
      }
    }
    for (int m = 0; m < MT; ++m) {
      float* am = acc + m * width + n;
      _mm512_mask_storeu_ps(am, lo, _mm512_add_ps(_mm512_maskz_loadu_ps(lo, am), r[m][0]));
      _mm512_mask_storeu_ps(am + 16, hi, _mm512_add_ps(_mm512_maskz_loadu_ps(hi, am + 16), r[m][1]));
    }
  }
}

void k_block(const float* x, const float* w, int64_t K, int64_t N, int64_t m0, int64_t rows, int64_t n0,
             int64_t width, int64_t k0, int64_t kb, float* acc) {
  switch (rows) {
    case 1: return k_block_avx512<1>(x, w, K, N, m0, n0, width, k0, kb, acc);
    case 2: return k_block_avx512<2>(x, w, K, N, m0, n0, width, k0, kb, acc);
    case 3: return k_block_avx512<3>(x, w, K, N, m0, n0, width, k0, kb, acc);
    case 4: return k_block_avx512<4>(x, w, K, N, m0, n0, width, k0, kb, acc);
    case 5: return k_block_avx512<5>(x, w, K, N, m0, n0, width, k0, kb, acc);
    case 6: return k_block_avx512<6>(x, w, K, N, m0, n0, width, k0, kb, acc);
    case 7: return k_block_avx512<7>(x, w, K, N, m0, n0, width, k0, kb, acc);
    default: return k_block_avx512<8>(x, w, K, N, m0, n0, width, k0, kb, acc);
  }
}
#elif defined(__AVX2__) && defined(__FMA__)
// AVX2 + FMA (most laptops and desktops without AVX-512): the same scheme with 8-float vectors, MT rows x
// 16 columns in registers (16 ymm registers: MT <= 4 keeps 2 * MT accumulators, 2 weights, 1 broadcast);
// the columns left over past the last full 16 run as scalar loops.
template <int MT>
void k_block_avx2(const float* x, const float* w, int64_t K, int64_t N, int64_t m0, int64_t n0, int64_t width,
                  int64_t k0, int64_t kb, float* acc) {
  const float* xk = x + m0 * K + k0;
  int64_t n = 0;
  for (; n + 16 <= width; n += 16) {
    __m256 r[MT][2];
    for (int m = 0; m < MT; ++m) r[m][0] = r[m][1] = _mm256_setzero_ps();
    const float* wk = w + k0 * N + n0 + n;
    const bool prefetch = n + kPrefetchColumns + 16 <= width;
    for (int64_t k = 0; k < kb; ++k, wk += N) {
      if (prefetch) _mm_prefetch(reinterpret_cast<const char*>(wk + kPrefetchColumns), _MM_HINT_T0);
      const __m256 w0 = _mm256_loadu_ps(wk);
      const __m256 w1 = _mm256_loadu_ps(wk + 8);
      for (int m = 0; m < MT; ++m) {
        const __m256 xm = _mm256_broadcast_ss(xk + m * K + k);
        r[m][0] = _mm256_fmadd_ps(xm, w0, r[m][0]);
        r[m][1] = _mm256_fmadd_ps(xm, w1, r[m][1]);
      }
    }
    for (int m = 0; m < MT; ++m) {
      float* am = acc + m * width + n;
      _mm256_storeu_ps(am, _mm256_add_ps(_mm256_loadu_ps(am), r[m][0]));
      _mm256_storeu_ps(am + 8, _mm256_add_ps(_mm256_loadu_ps(am + 8), r[m][1]));
    }
  }
  for (int64_t k = 0; n < width && k < kb; ++k)  // tail columns
    for (int m = 0; m < MT; ++m) {
      const float xm = xk[m * K + k];
      const float* wk = w + (k0 + k) * N + n0;
      for (int64_t c = n; c < width; ++c) acc[m * width + c] += xm * wk[c];
    }
}

void k_block(const float* x, const float* w, int64_t K, int64_t N, int64_t m0, int64_t rows, int64_t n0,
             int64_t width, int64_t k0, int64_t kb, float* acc) {
  for (int64_t done = 0; done < rows; done += 4) {  // groups of at most 4 rows (registers)
    const int64_t r = std::min<int64_t>(4, rows - done);
    float* a = acc + done * width;
    switch (r) {
      case 1: k_block_avx2<1>(x, w, K, N, m0 + done, n0, width, k0, kb, a); break;
      case 2: k_block_avx2<2>(x, w, K, N, m0 + done, n0, width, k0, kb, a); break;
      case 3: k_block_avx2<3>(x, w, K, N, m0 + done, n0, width, k0, kb, a); break;
      default: k_block_avx2<4>(x, w, K, N, m0 + done, n0, width, k0, kb, a);
    }
  }
}
#else
void k_block(const float* x, const float* w, int64_t K, int64_t N, int64_t m0, int64_t rows, int64_t n0,
             int64_t width, int64_t k0, int64_t kb, float* acc) {
  for (int64_t k = k0; k < k0 + kb; ++k)
    for (int64_t m = 0; m < rows; ++m) {
      const float xm = x[(m0 + m) * K + k];
      const float* wk = w + k * N + n0;
      float* am = acc + m * width;
#pragma omp simd
      for (int64_t n = 0; n < width; ++n) am[n] += xm * wk[n];
    }
}
#endif

// Columns [n0, n0 + width) of all M rows: weight rows in blocks of kRowsPerBlock; within a block every
// group of up to 8 output rows reuses the block's weights from L1, so weights come from memory once.
void column_block(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n0,
                  int64_t width, float* acc) {
  std::fill(acc, acc + M * width, 0.f);
  for (int64_t k0 = 0; k0 < K; k0 += kRowsPerBlock) {
    const int64_t kb = std::min<int64_t>(kRowsPerBlock, K - k0);
    for (int64_t m0 = 0; m0 < M; m0 += 8)
      k_block(x, w, K, N, m0, std::min<int64_t>(8, M - m0), n0, width, k0, kb, acc + m0 * width);
  }
  for (int64_t m = 0; m < M; ++m) std::copy(acc + m * width, acc + (m + 1) * width, y + m * N + n0);
}

ffi::Error LayerMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::S32> rows, ffi::ResultBuffer<ffi::F32> y) {
  auto x_dims = x.dimensions();
  auto w_dims = w.dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 3 || x_dims[1] != w_dims[1])
    return ffi::Error::InvalidArgument("layer_matmul: x must be [M, K] and w [L, K, N]");
  const int64_t K = w_dims[1], N = w_dims[2];
  const int64_t M = std::clamp<int64_t>(rows.typed_data()[0], 0, x_dims[0]);  // rows past M: zeros
  const int64_t layer_id = layer.typed_data()[0];
  if (x_dims[0] > 64) return ffi::Error::InvalidArgument("layer_matmul: at most 64 rows (meant for decode steps)");
  if (layer_id < 0 || layer_id >= w_dims[0]) return ffi::Error::InvalidArgument("layer_matmul: layer out of range");
  const float* w_layer = w.typed_data() + layer_id * K * N;
  const float* xs = x.typed_data();
  float* ys = y->typed_data();
  std::fill(ys + M * N, ys + x_dims[0] * N, 0.f);
  if (M == 0) return ffi::Error::Success();
  // Column blocks of at most kBlock floats keep the accumulators in L1. Parallel only for big enough
  // work: waking the pool costs ~20 us, as long as streaming half a megabyte or ~1M multiply-adds.
  const int64_t cols_for_bytes = kParallelBytes / 4 / std::max<int64_t>(K, 1);
  const int64_t cols_for_macs = kParallelMacs / std::max<int64_t>(M * K, 1);
  const int64_t min_cols = std::max<int64_t>(16, (std::min(cols_for_bytes, cols_for_macs) + 15) / 16 * 16);
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  int64_t blocks = std::max<int64_t>((N + kBlock - 1) / kBlock, std::min<int64_t>(threads, N / min_cols));
  if (blocks > threads) blocks = (blocks + threads - 1) / threads * threads;  // no thread left with one less
  const int64_t block = ((N + blocks - 1) / blocks + 15) / 16 * 16;  // balanced, whole vectors
  auto run_block = [&](int64_t i) {
    thread_local std::vector<float> acc;
    acc.resize(M * block);
    const int64_t n0 = i * block;
    if (n0 >= N) return;
    column_block(xs, w_layer, ys, M, K, N, n0, std::min<int64_t>(block, N - n0), acc.data());
  };
  trellis::parallel_for(pool, blocks, run_block);  // one block: runs here, wakes no helper
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TrellisLayerMatmul, LayerMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// Whether this build has a register-tiled path (AVX-512, or AVX2 + FMA). The portable loops were measured
// 1.1-2.4x slower than XLA for 2+ rows (BENCHMARKS.md), so the Python side only uses this kernel when it does.
extern "C" int TrellisLayerMatmulIsVectorized() {
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
  return 1;
#else
  return 0;
#endif
}
