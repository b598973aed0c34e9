// Copy whole KV pages in place, as an XLA FFI custom call (target "trellis_copy_pages").
//
// Contract (pallas_kernels/ragged_paged_attention/copy_pages.py is the only caller): pages [L, Hkv, P, S, D]
// of any dtype (aliased to the output: updated in place), src and dst [C] int32, count int32[]: for
// i < min(count, C), page dst[i] of every layer and head becomes a copy of page src[i]; pairs with a page
// outside [0, P) are skipped. Copies run in order (a later one may read an earlier one's result).
//
// Why it exists: the radix cache's partial-page reuse copies a few pages per step, and XLA:CPU's
// dynamic-update-slice loop over the donated pool took ~150 ms per bfloat16 page here (it converts or
// copies the whole operand) where moving the page is L * Hkv memcpys of S * D values.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

ffi::Error CopyPages(ffi::AnyBuffer pages, ffi::Buffer<ffi::S32> src, ffi::Buffer<ffi::S32> dst,
                     ffi::Buffer<ffi::S32> count, ffi::Result<ffi::AnyBuffer> out) {
  auto dims = pages.dimensions();
  if (dims.size() != 5 || src.element_count() != dst.element_count())
    return ffi::Error::InvalidArgument("copy_pages: pages must be [L,Hkv,P,S,D] and src, dst of one length");
  const int64_t L = dims[0], H = dims[1], P = dims[2];
  const int64_t page_bytes = pages.size_bytes() / (L * H * P);  // S * D elements
  char* base = reinterpret_cast<char*>(out->untyped_data());
  if (base != pages.untyped_data())  // not aliased (XLA could not donate): start from a copy of the pages
    std::memcpy(base, pages.untyped_data(), pages.size_bytes());
  const int64_t n = std::min<int64_t>(count.typed_data()[0], src.element_count());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t from = src.typed_data()[i], to = dst.typed_data()[i];
    if (from < 0 || from >= P || to < 0 || to >= P || from == to) continue;
    for (int64_t lh = 0; lh < L * H; ++lh)
      std::memcpy(base + (lh * P + to) * page_bytes, base + (lh * P + from) * page_bytes, page_bytes);
  }
  return ffi::Error::Success();
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisCopyPages, CopyPages);
