// A zeroed buffer whose memory the OS supplies on first touch, as an XLA FFI custom call (target
// "trellis_fresh_zeros").
//
// Contract (pallas_kernels/fresh_zeros.py is the only caller): no operands, one result of any shape and dtype;
// on return the result reads as zeros. Its whole pages are replaced by a fresh private anonymous mapping
// (mmap MAP_FIXED), which the kernel guarantees reads as zeros and backs with memory only when a page is
// first written; the partial pages at either end, and everything when the mapping fails, are memset.
//
// Why it exists: the KV pool (gigabytes on CPU) was written with zeros at start-up, one page fault and
// one memset per 4 KiB, seconds before the first step; most of its pages are not used for a long time.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>

#include "ffi_binding.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Below this, memset is cheaper than a system call, and small buffers keep the allocator's own mappings.
constexpr int64_t kRemapMinBytes = int64_t{1} << 20;

ffi::Error FreshZeros(ffi::Result<ffi::AnyBuffer> out) {
  char* base = reinterpret_cast<char*>(out->untyped_data());
  const int64_t size = out->size_bytes();
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t start = reinterpret_cast<uintptr_t>(base);
  const uintptr_t first = (start + page - 1) / page * page;  // whole pages: [first, last)
  const uintptr_t last = (start + size) / page * page;
  if (size < kRemapMinBytes || last <= first) {
    std::memset(base, 0, size);
    return ffi::Error::Success();
  }
  void* mapped = mmap(reinterpret_cast<void*>(first), last - first, PROT_READ | PROT_WRITE,
                      MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mapped == MAP_FAILED) {  // e.g. the process's mapping count is at its limit
    std::memset(base, 0, size);
    return ffi::Error::Success();
  }
  std::memset(base, 0, first - start);
  std::memset(reinterpret_cast<char*>(last), 0, start + size - last);
  return ffi::Error::Success();
}

}  // namespace

TRELLIS_FFI_HANDLER(TrellisFreshZeros, FreshZeros);
