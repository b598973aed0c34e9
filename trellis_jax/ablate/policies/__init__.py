"""Extra eviction policies for research, registered by name in the cache's own registry.

Adding a policy takes one small file (see ``arc.py`` for a stateful example):

    from trellis_jax.cache import HeapPolicy, register_policy

    @register_policy("deep_first")
    class DeepFirst(HeapPolicy):
        '''Evict the deepest leaf first (keeps short shared prefixes), LRU among equals.'''
        name = "deep_first"
        def sort_key(self, node):
            return -node.depth, node.last_access

Importing the module registers the name; from then on ``RadixCache(policy="deep_first")``, the
ablation CLI (``--policies deep_first --policy-module your.module``) and anything else that resolves
policies through ``trellis_jax.cache.get_policy`` (the engine) accept it. Where nothing imports the
module (the server), pass ``"your.module:deep_first"``: ``get_policy`` imports the module first, e.g.
``--eviction-policy trellis_jax.ablate.policies.arc:arc``. Importing this package registers the
examples below.
"""

from trellis_jax.ablate.policies import arc  # noqa: F401  (registers "arc")
