// How the native matmuls split the output columns of one call into tasks for XLA's intra-op pool, and
// where a column's weights start in their stored layout.
#pragma once

#include <algorithm>
#include <cstdint>

namespace trellis {

struct ColumnBlocks {
  int64_t count, width;  // tasks, and columns per task (the last may be narrower or empty)
};

// Blocks of at most 1024 columns, so the pool can balance them; parallel only for big enough work:
// waking the pool costs ~20 us, as long as streaming half a megabyte of weights or ~1M multiply-adds.
// Widths are multiples of `align` (the kernel's register strip), so strips stored `align`-wide stay whole.
inline ColumnBlocks column_blocks(int64_t M, int64_t K, int64_t N, int64_t weight_bytes, int64_t threads,
                                  int64_t align = 16) {
  constexpr int64_t kBlock = 1024, kParallelBytes = 512 * 1024, kParallelMacs = 1 << 20;
  const int64_t cols_for_bytes = kParallelBytes / weight_bytes / std::max<int64_t>(K, 1);
  const int64_t cols_for_macs = kParallelMacs / std::max<int64_t>(M * K, 1);
  const int64_t min_cols = std::max<int64_t>(16, (std::min(cols_for_bytes, cols_for_macs) + 15) / 16 * 16);
  threads = std::max<int64_t>(1, threads);
  int64_t blocks = std::max<int64_t>((N + kBlock - 1) / kBlock, std::min<int64_t>(threads, N / min_cols));
  if (blocks > threads) blocks = (blocks + threads - 1) / threads * threads;  // no thread left with one less
  return {blocks, ((N + blocks - 1) / blocks + align - 1) / align * align};  // balanced, whole strips
}

// Weights stored as strips of `width` columns, each strip whole (all its rows) before the next; within a
// strip, row r of column j is `pack` values at (r * width + j) * pack (bf16 keeps row pairs together:
// pack 2). The plain [K, N] layout is one strip of width N. A vector of columns never crosses a strip
// when the width is a multiple of the vector or all of N, so the kernels walk one pointer per vector.
struct StripLayout {
  int64_t rows, width, pack;
  int64_t offset(int64_t column) const { return (column / width) * rows * width * pack + pack * (column % width); }
  int64_t row_step() const { return width * pack; }
};

// Where a register tile's `vectors` vectors of `lanes` columns from column n start: at base + v * stride
// for every vector below column `end` when `uniform` (a tile within one strip, or strips one vector wide).
// A tile that straddles strips otherwise is not uniform; the kernels then run it one vector at a time.
struct VectorRun {
  int64_t base, stride;
  bool uniform;
};

inline VectorRun vector_run(const StripLayout& layout, int64_t n, int64_t end, int64_t lanes, int vectors) {
  const int64_t base = layout.offset(n);
  const int64_t stride = n + lanes < end ? layout.offset(n + lanes) - base : lanes * layout.pack;
  for (int v = 2; v < vectors && n + lanes * v < end; ++v)
    if (layout.offset(n + lanes * v) != base + v * stride) return {base, stride, false};
  return {base, stride, true};
}

// The register-tiled kernels' walk over one block of columns [n0, n0 + width): rows in passes of
// `row_block` (whose inputs stay in L2/L3 while the strips pass), each pass strip by strip (`strip`
// columns), each strip in groups of at most `tile_rows` rows. Calls tile(m0, rows, n, has_next), where
// has_next says a whole strip follows in this block (worth prefetching; a partial last one is not).
template <typename Tile>
void for_each_tile(int64_t M, int64_t n0, int64_t width, int64_t strip, int64_t tile_rows, int64_t row_block,
                   Tile&& tile) {
  const int64_t end = n0 + width;
  for (int64_t r0 = 0; r0 < M; r0 += row_block) {
    const int64_t r1 = std::min(M, r0 + row_block);
    for (int64_t n = n0; n < end; n += strip)
      for (int64_t m0 = r0; m0 < r1; m0 += tile_rows) tile(m0, std::min(tile_rows, r1 - m0), n, n + 2 * strip <= end);
  }
}

}  // namespace trellis
