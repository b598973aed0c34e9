"""Whole KV pages between the device pool and the host: the copies behind the radix cache's lower tiers.

    pages = gather_pages(kv, ids)          [n, 2, L, Hkv, S, D]: K then V of pages ids (kvstore/api.py's layout)
    kv = scatter_pages(kv, ids, pages)     pages written into ids (KV donated: in place)
    PageIO(max_pages).save(kv, ids) -> PageRead      a jitted gather queued on the device, its copy to the host
                                                     started at once; PageRead.fetch() -> numpy pages
    PageIO.load(kv, ids, pages) -> kv                 a jitted scatter of host pages (KV donated)
    PageIO.warmup(kv) -> kv                           both compiled for every padded size, ahead of time

Both pad the page count up to a power of two (at most `max_pages` per call, longer lists are split), so a
few programs serve every count; padded rows read or write the sink page 0, which nothing reads. A save
queued before a step reads the pages as they were before it: the device runs calls in order, and donating
the KV to the step waits for the gather's reads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from trellis_jax.model.kv import KVPages


def gather_pages(kv: KVPages, ids: jax.Array) -> jax.Array:
    """[n, 2, L, Hkv, S, D] from K and V [L, Hkv, P, S, D]."""
    pages = jnp.stack([kv.k[:, :, ids], kv.v[:, :, ids]])  # [2, L, Hkv, n, S, D]
    return jnp.moveaxis(pages, 3, 0)


def scatter_pages(kv: KVPages, ids: jax.Array, pages: jax.Array) -> KVPages:
    """kv with page ids[i] := pages[i] (K and V, every layer and head)."""
    pages = jnp.moveaxis(pages.astype(kv.k.dtype), 0, 3)  # [2, L, Hkv, n, S, D]
    return KVPages(kv.k.at[:, :, ids].set(pages[0]), kv.v.at[:, :, ids].set(pages[1]))


class PageRead:
    """Pages a save queued; `fetch()` waits for them and returns numpy [n, 2, L, Hkv, S, D]."""

    def __init__(self, parts: list[tuple[jax.Array, int]]) -> None:
        self._parts = parts

    def fetch(self) -> np.ndarray:
        return np.concatenate([np.asarray(part)[:n] for part, n in self._parts])


class PageIO:
    def __init__(self, max_pages: int = 64) -> None:
        self.max_pages = max_pages
        self._gather = jax.jit(gather_pages)
        self._scatter = jax.jit(scatter_pages, donate_argnums=(0,))

    def save(self, kv: KVPages, page_ids: list[int]) -> PageRead:
        parts = []
        for chunk in self._chunks(page_ids):
            pages = self._gather(kv, _padded(chunk))
            pages.copy_to_host_async()
            parts.append((pages, len(chunk)))
        return PageRead(parts)

    def load(self, kv: KVPages, page_ids: list[int], pages: np.ndarray) -> KVPages:
        if len(pages) != len(page_ids):
            raise ValueError(f"{len(pages)} pages for {len(page_ids)} page ids")
        done = 0
        for chunk in self._chunks(page_ids):
            ids = _padded(chunk)
            block = np.zeros((len(ids), *pages.shape[1:]), pages.dtype)
            block[: len(chunk)] = pages[done : done + len(chunk)]
            kv = self._scatter(kv, ids, block)
            done += len(chunk)
        return kv

    def warmup(self, kv: KVPages) -> KVPages:
        """Compile the gather and the scatter for every padded size (on the sink page 0); returns the KV."""
        size = 1
        while size <= self.max_pages:
            self.save(kv, [0] * size).fetch()
            kv = self.load(
                kv, [0] * size, np.zeros((size, *gather_pages(kv, np.zeros(1, np.int32)).shape[1:]), kv.k.dtype)
            )
            size *= 2
        return kv

    def _chunks(self, page_ids: list[int]) -> list[list[int]]:
        return [page_ids[i : i + self.max_pages] for i in range(0, len(page_ids), self.max_pages)]


def _padded(chunk: list[int]) -> np.ndarray:
    size = 1 << max(0, len(chunk) - 1).bit_length()
    ids = np.zeros(size, np.int32)  # padding: the sink page 0
    ids[: len(chunk)] = chunk
    return ids
