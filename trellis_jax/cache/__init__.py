"""The RadixAttention prefix cache: page allocator, radix tree over token ids, eviction policies,
tenant namespaces, stats, an integrity check, and the lower tiers (tiers.py: evicted pages demoted to a
page store stay in the tree, and come back by reload).

Owns: which KV page ids hold which token prefixes, and who may use or evict them.
May import: the standard library only (no jax, no numpy): it deals in token ids and int page ids, so
the scheduler and the ablation tools (simulation mode) run it without any device memory.
Lifecycle and the method-by-method contract: ``radix_cache.py``.
"""

from trellis_jax.cache import policies as _builtin_policies  # noqa: F401  (registers lru, lfu, ...)
from trellis_jax.cache.allocator import OutOfPagesError, PageAllocator
from trellis_jax.cache.integrity import IntegrityError
from trellis_jax.cache.node import SHARED, TreeNode
from trellis_jax.cache.policy import EvictionPolicy, HeapPolicy, get_policy, policy_names, register_policy
from trellis_jax.cache.radix_cache import InsertResult, MatchResult, PartialPage, RadixCache
from trellis_jax.cache.stats import CacheStats
from trellis_jax.cache.tiers import Demotion, LowerRun, TierStats

# 16 tokens per page on GPU and CPU: ~2.7x less host work per request than page size 1 for a ~0.4 %
# lower hit rate, and a natural kernel tile; measured and argued in docs/benchmarks/cache.md ("Page size 16").
DEFAULT_PAGE_SIZE = 16

__all__ = [
    "CacheStats",
    "DEFAULT_PAGE_SIZE",
    "Demotion",
    "EvictionPolicy",
    "HeapPolicy",
    "InsertResult",
    "IntegrityError",
    "LowerRun",
    "MatchResult",
    "OutOfPagesError",
    "PageAllocator",
    "PartialPage",
    "RadixCache",
    "SHARED",
    "TierStats",
    "TreeNode",
    "get_policy",
    "policy_names",
    "register_policy",
]
