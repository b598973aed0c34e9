// y = x @ w[layer] for stacked layer weights, as an XLA FFI custom call (target "trellis_layer_matmul").
//
// Contract (pallas_kernels/layer_matmul.py is the only caller): x [M, K] float32, w [L, K, N] float32,
// layer int32[] -> y [M, N] float32. Meant for small M (decode steps): the weights are streamed once,
// straight out of the stacked array.
//
// Why it exists: inside the model's scan over layers, XLA:CPU copies each layer's weights out of the
// stacked array (a dynamic-slice) before its dot, which doubled the bytes a batch-1 decode step moves
// (BENCHMARKS.md). Here the layer index is just a pointer offset. Work is split into column blocks
// (parallel only when a matrix is big enough to repay waking XLA's intra-op pool); each block streams its
// weight rows in order and keeps the M x block accumulators in L1.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 1024;                // output columns per task (accumulators: M x 4 KB)
constexpr int64_t kParallelBytes = 512 * 1024;  // weight bytes per task before splitting pays

// Columns [n0, n0 + width) of all M rows. Weight rows are streamed in order (whole `width`-float
// segments, so the hardware prefetcher sees long sequential runs); the M x width accumulators stay in L1
// and four weight rows are folded into them per pass, which keeps loads/stores per FMA low.
void column_block(const float* x, const float* w, float* y, int64_t M, int64_t K, int64_t N, int64_t n0,
                  int64_t width, float* acc) {
  std::fill(acc, acc + M * width, 0.f);
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) {
    const float* w0 = w + k * N + n0;
    const float* w1 = w0 + N;
    const float* w2 = w1 + N;
    const float* w3 = w2 + N;
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = x + m * K + k;
      const float x0 = xm[0], x1 = xm[1], x2 = xm[2], x3 = xm[3];
      float* am = acc + m * width;
#pragma omp simd
      for (int64_t n = 0; n < width; ++n) am[n] += x0 * w0[n] + x1 * w1[n] + x2 * w2[n] + x3 * w3[n];
    }
  }
  for (; k < K; ++k) {
    const float* wk = w + k * N + n0;
    for (int64_t m = 0; m < M; ++m) {
      const float xk = x[m * K + k];
      float* am = acc + m * width;
#pragma omp simd
      for (int64_t n = 0; n < width; ++n) am[n] += xk * wk[n];
    }
  }
  for (int64_t m = 0; m < M; ++m) std::copy(acc + m * width, acc + (m + 1) * width, y + m * N + n0);
}

ffi::Error LayerMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                       ffi::Buffer<ffi::S32> layer, ffi::ResultBuffer<ffi::F32> y) {
  auto x_dims = x.dimensions();
  auto w_dims = w.dimensions();
  if (x_dims.size() != 2 || w_dims.size() != 3 || x_dims[1] != w_dims[1])
    return ffi::Error::InvalidArgument("layer_matmul: x must be [M, K] and w [L, K, N]");
  const int64_t M = x_dims[0], K = w_dims[1], N = w_dims[2];
  const int64_t layer_id = layer.typed_data()[0];
  if (M > 64) return ffi::Error::InvalidArgument("layer_matmul: at most 64 rows (meant for decode steps)");
  if (layer_id < 0 || layer_id >= w_dims[0]) return ffi::Error::InvalidArgument("layer_matmul: layer out of range");
  const float* w_layer = w.typed_data() + layer_id * K * N;
  const float* xs = x.typed_data();
  float* ys = y->typed_data();
  // Column blocks of at most kBlock floats keep the accumulators in L1. Parallel only for big matrices:
  // waking the pool costs ~20 us, as long as streaming half a megabyte.
  const int64_t min_cols = std::max<int64_t>(16, (kParallelBytes / 4 / std::max<int64_t>(K, 1) + 15) / 16 * 16);
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  const int64_t blocks = std::max<int64_t>((N + kBlock - 1) / kBlock, std::min<int64_t>(threads, N / min_cols));
  const int64_t block = ((N + blocks - 1) / blocks + 15) / 16 * 16;  // balanced, whole vectors
  auto run_block = [&](int64_t i) {
    thread_local std::vector<float> acc;
    acc.resize(M * block);
    const int64_t n0 = i * block;
    if (n0 >= N) return;
    column_block(xs, w_layer, ys, M, K, N, n0, std::min<int64_t>(block, N - n0), acc.data());
  };
  if (blocks == 1) {
    run_block(0);
  } else {
    trellis::parallel_for(pool, blocks, run_block);
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(TrellisLayerMatmul, LayerMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
