"""Copy whole KV pages (every layer and head), in place when the pages are donated.

Contract: `copy_pages(pages, src, dst, count)`: pages [L, Hkv, P, S, D] (any dtype); src, dst int32 [C];
count int32 scalar (may be traced): for i < count, in order, page dst[i] becomes a copy of page src[i];
entries past count are ignored (callers pad to a fixed C, so one compile serves every step). Returns the
pages. `implementation`: "native" (native/copy_pages.cc, CPU: memcpys into the aliased buffer), "xla" (a
loop of dynamic slices: the reference, and the path on GPU), or None to pick native where it builds.

Why: the radix cache reuses the first tokens of a cached page by copying it into a request's own page.
On CPU, XLA's loop took ~150 ms per copy of a bfloat16 page in a 256 MiB pool (it rewrites the whole
operand); the kernel moves just L * Hkv page slices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels.native.build import cpu_kernel_unavailable, load_target

TARGET = "trellis_copy_pages"


def native_available() -> str | None:
    """None when the native kernel can run here, else the reason."""
    return cpu_kernel_unavailable(lambda: load_target("copy_pages.cc", "TrellisCopyPages", TARGET))


def reference_copy_pages(pages, src, dst, count):
    def copy_one(i, pages):
        page = jax.lax.dynamic_slice_in_dim(pages, src[i], 1, axis=2)
        return jax.lax.dynamic_update_slice_in_dim(pages, page, dst[i], axis=2)

    return jax.lax.fori_loop(0, jnp.minimum(count, src.shape[0]), copy_one, pages)


def native_copy_pages(pages, src, dst, count):
    load_target("copy_pages.cc", "TrellisCopyPages", TARGET)
    call = jax.ffi.ffi_call(
        TARGET, jax.ShapeDtypeStruct(pages.shape, pages.dtype), input_output_aliases={0: 0}, vmap_method="sequential"
    )
    return call(pages, src.astype(jnp.int32), dst.astype(jnp.int32), jnp.asarray(count, jnp.int32))


def copy_pages(pages, src, dst, count, *, implementation=None):
    """pages with page dst[i] := page src[i] for i < count (see the module docstring)."""
    if pages.ndim != 5 or src.shape != dst.shape or src.ndim != 1:
        raise ValueError(
            f"copy_pages: pages must be [L, Hkv, P, S, D] and src, dst [C], got {pages.shape}, {src.shape}, {dst.shape}"
        )
    if implementation not in (None, "native", "xla"):
        raise ValueError(f"copy_pages: unknown implementation {implementation!r}; use 'native', 'xla' or None")
    if implementation == "native" or (implementation is None and native_available() is None):
        return native_copy_pages(pages, src, dst, count)
    return reference_copy_pages(pages, src, dst, count)
