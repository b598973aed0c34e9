// Write new K or V rows into bfloat16 pages in place, as an XLA FFI custom call (target "trellis_write_kv_bf16").
//
// Contract (pallas_kernels/ragged_paged_attention/write_kv.py is the only caller): pages [L, Hkv, P, S, D]
// bfloat16 (aliased to the output: updated in place), layer int32[], new [T, Hkv, D] float32,
// slot_mapping [T] int32 = page * S + offset. Row t of every kv head goes to slot slot_mapping[t] of
// `layer`, rounded to nearest even; slots outside [0, P*S) are dropped.
//
// Why it exists: XLA:CPU widens a bfloat16 scatter to float32 over the whole operand, and a scatter of
// the uint16 bit patterns needs bitcasts that it materialises as copies; either way every layer of
// every step converted or copied the entire KV pool (a batch-1 decode step took ~0.2-4 s instead of ~30 ms).
#include <cstdint>
#include <cstring>

#include "bf16.h"
#include "ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using trellis::to_bf16;

ffi::Error WriteKvBf16(ffi::AnyBuffer pages, ffi::Buffer<ffi::S32> layer, ffi::Buffer<ffi::F32> rows,
                       ffi::Buffer<ffi::S32> slot_mapping, ffi::Result<ffi::AnyBuffer> out) {
  auto dims = pages.dimensions();
  auto row_dims = rows.dimensions();
  if (pages.element_type() != ffi::BF16 || dims.size() != 5 || row_dims.size() != 3 || row_dims[1] != dims[1] ||
      row_dims[2] != dims[4] || slot_mapping.element_count() != static_cast<size_t>(row_dims[0]))
    return ffi::Error::InvalidArgument("write_kv_bf16: pages must be bf16 [L,Hkv,P,S,D], rows f32 [T,Hkv,D]");
  const int64_t L = dims[0], H = dims[1], slots = dims[2] * dims[3], D = dims[4], T = row_dims[0];
  const int64_t layer_id = layer.typed_data()[0];
  if (layer_id < 0 || layer_id >= L) return ffi::Error::InvalidArgument("write_kv_bf16: layer out of range");
  uint16_t* dst = reinterpret_cast<uint16_t*>(out->untyped_data());
  if (dst != pages.untyped_data())  // not aliased (XLA could not donate): start from a copy of the pages
    std::memcpy(dst, pages.untyped_data(), pages.size_bytes());
  const float* src = rows.typed_data();
  const int32_t* slot = slot_mapping.typed_data();
  for (int64_t t = 0; t < T; ++t) {
    if (slot[t] < 0 || slot[t] >= slots) continue;
    for (int64_t h = 0; h < H; ++h) {
      uint16_t* row = dst + ((layer_id * H + h) * slots + slot[t]) * D;
      const float* values = src + (t * H + h) * D;
      for (int64_t d = 0; d < D; ++d) row[d] = to_bf16(values[d]);
    }
  }
  return ffi::Error::Success();
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisWriteKvBf16, WriteKvBf16);
