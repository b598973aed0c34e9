"""Page bookkeeping of running requests on top of the RadixCache (see request.py for the layout).

The only scheduler module that talks to the cache. With the prefix cache disabled the cache runs with
`enabled=False`: nothing matches, nothing enters the tree, every page stays private and is freed at the end.

    acquire_prefix(req)   match req.token_ids[:-1] and lock it (at least one token is always computed:
                          its logits give the next token); sets page_ids/num_computed. With a page store
                          (`reloader`, reload.py) demoted pages that continue the match may be reloaded.
    acquire_partial_page(req, spare)  where a tree page of a sibling branch starts with the next tokens,
                          take the next private page as its copy (req.page_copy; the source locked in
                          req.copy_lock) and count those positions as computed
    copy_done(req)        the step has copied: unlock the source
    release(req, keep_tail)  at the end: the partly filled last page may enter the tree (cache_tail_page)
    grow(req, kv_len)     private pages so that page_ids cover kv_len positions (evicts if needed)
    publish(req)          insert every page filled since the last call whose tokens are all known (no
                          pending placeholder); swap to the canonical pages, move the lock to the new handle
    release(req)          unlock, free the private pages; req holds nothing afterwards
    flush(namespace)      evict the tree pages no request holds (all, or one namespace's); check integrity
"""

from __future__ import annotations

from collections.abc import Sequence

from trellis_jax.cache import OutOfPagesError, RadixCache
from trellis_jax.scheduler.request import Request

TAIL_PAD = -1  # fills a cached tail page's key past its valid tokens; token ids are never negative


def pages_for(num_tokens: int, page_size: int) -> int:
    return -(-num_tokens // page_size)


def lock_partial_source(cache: RadixCache, partial, spare_pages: int) -> bool:
    """Lock the page a request will copy (before allocating: eviction must not take it), unless that takes
    more than `spare_pages` pages out of what allocations can evict; True if it is locked. The ablation
    replay uses it too, so the simulator decides as the engine does."""
    available = cache.num_free_pages + cache.num_evictable_pages
    cache.lock(partial.handle)
    if available - (cache.num_free_pages + cache.num_evictable_pages) > spare_pages:
        cache.unlock(partial.handle)
        return False
    return True


class KVManager:
    def __init__(self, cache: RadixCache) -> None:
        self.cache = cache
        self.page_size = cache.page_size
        self.reloader = None  # a reload.Reloader once a page store is attached (Scheduler.attach_store)

    @property
    def prefix_cache_enabled(self) -> bool:
        return self.cache.enabled

    @property
    def num_usable_pages(self) -> int:
        return self.cache.num_pages - 1  # page 0 is the padding sink

    @property
    def num_available_pages(self) -> int:
        """Pages an allocation can get right now: free + evictable."""
        return self.cache.num_free_pages + self.cache.num_evictable_pages

    def cached_prefix_length(self, tokens: Sequence[int], namespace: str) -> int:
        """How many leading tokens (whole pages, at most len-1) are in the tree; mutates nothing."""
        return self.cache.peek(tokens[: len(tokens) - 1], namespace)

    def acquire_prefix(self, request: Request) -> int:
        """Match and lock the request's cached prefix (whole pages); returns the number of cached tokens."""
        tokens = request.token_ids
        match, run = self.cache.match_tiers(tokens[: len(tokens) - 1], request.namespace or "")
        self.cache.lock(match.handle)
        handle, reloaded = (match.handle, []) if self.reloader is None else self.reloader.reload(match.handle, run)
        request.handle = handle
        request.page_ids = list(match.page_ids) + reloaded
        request.num_tree_pages = len(request.page_ids)
        request.num_computed = match.num_cached_tokens + len(reloaded) * self.page_size
        return request.num_computed

    def acquire_partial_page(self, request: Request, spare_pages: int) -> int:
        """After acquire_prefix: where a tree page of a sibling branch starts with the request's next tokens,
        take the request's next page now as a copy of it (request.page_copy, the source locked in
        request.copy_lock) and return the positions it saves; 0 when none shares a token, or when locking
        the source would take more than `spare_pages` pages out of what allocations can evict."""
        tokens = request.token_ids[: len(request.token_ids) - 1]
        partial = self.cache.partial_page(request.handle, tokens, request.namespace or "")
        if partial is None:
            return 0
        if not lock_partial_source(self.cache, partial, spare_pages):
            return 0
        try:
            own = self.cache.alloc_pages(1)[0]
        except OutOfPagesError:
            self.cache.unlock(partial.handle)
            return 0
        request.page_ids.append(own)
        request.page_copy, request.copy_lock = (partial.page_id, own), partial.handle
        request.num_computed += partial.num_tokens
        return partial.num_tokens

    def cache_tail_page(self, request: Request) -> None:
        """Insert the page holding the request's last positions past its whole pages, keyed by those tokens
        padded with TAIL_PAD (no real token: a whole-page match never enters it), so that a later request
        starting the same way can copy them (acquire_partial_page): the next chat turn re-sends this
        turn's prompt, and an agent's forks this transcript. Needs every whole page published."""
        ps, full = self.page_size, request.num_computed // self.page_size
        valid = request.num_computed - full * ps
        if not self.cache.enabled or valid == 0 or full != request.num_tree_pages or len(request.page_ids) <= full:
            return
        tokens = request.token_ids[: request.num_computed] + [TAIL_PAD] * (ps - valid)
        self.cache.insert(tokens, request.page_ids[: full + 1], request.namespace or "")
        request.num_tree_pages = full + 1  # tree-owned now (or freed by insert as a duplicate): not private

    def copy_done(self, request: Request) -> None:
        """The step that copied request.page_copy has run: the source may be evicted again."""
        if request.copy_lock is not None:
            self.cache.unlock(request.copy_lock)
        request.page_copy, request.copy_lock = None, None

    def grow(self, request: Request, kv_len: int) -> bool:
        """Allocate private pages until page_ids cover kv_len positions; False (nothing changed) if short."""
        missing = pages_for(kv_len, self.page_size) - len(request.page_ids)
        if missing <= 0:
            return True
        try:
            request.page_ids.extend(self.cache.alloc_pages(missing))
        except OutOfPagesError:
            return False
        return True

    def publish(self, request: Request) -> int:
        """Insert the pages filled since the last publish into the tree; returns the tree page count."""
        # A page holding a PENDING_TOKEN placeholder waits: its key is not known yet (Request.num_pending).
        full_pages = min(request.num_computed, request.num_known_tokens) // self.page_size
        if not self.cache.enabled or full_pages <= request.num_tree_pages:
            return request.num_tree_pages
        tokens = request.token_ids[: full_pages * self.page_size]
        result = self.cache.insert(tokens, request.page_ids[:full_pages], request.namespace or "")
        self.cache.lock(result.handle)
        self.cache.unlock(request.handle)
        request.handle = result.handle
        request.page_ids[:full_pages] = result.page_ids
        request.num_tree_pages = full_pages
        return full_pages

    def flush(self, namespace: str | None = None) -> int:
        """Evict every tree page no request holds: every namespace's (None), or only those of `namespace`
        and the namespaces nested under it (a tenant and its cache_salt splits). Checks the cache's
        integrity afterwards (IntegrityError); returns the pages freed. Running requests keep their pages."""
        cache = self.cache
        freed = cache.flush_all() if namespace is None else cache.evict_namespace(namespace)
        cache.check_integrity()
        return freed

    def release(self, request: Request, keep_tail: bool = False) -> None:
        """Give back everything the request holds: unlock its tree path, free its private pages. With
        `keep_tail` (a request that ran to its end), its last, partly filled page enters the tree first
        (cache_tail_page)."""
        self.copy_done(request)
        if keep_tail:
            self.cache_tail_page(request)
        if request.handle is not None:
            self.cache.unlock(request.handle)
        private = request.page_ids[request.num_tree_pages :]
        if private:
            self.cache.free_pages(private)
        request.handle = None
        request.page_ids = []
        request.num_tree_pages = 0
        request.num_computed = 0
