"""KV page stores below the device pool (pure host Python + numpy, no jax): the contract is in api.py.

- host.py: HostPageStore, L2 in RAM (one slab of page slots, LRU);
- disk.py: DiskPageStore, L3 under --kv-cache-dir (checksummed page files, a fingerprinted manifest,
  atomic writes), with page_file.py (the record format) and manifest.py;
- tiered.py: TieredPageStore, host in front of disk with write-back on a background thread;
- fingerprint.py: fingerprint_of, the disk store's fingerprint from plain values;
- order.py: parents_first, the order entries() lists pages in; checks.py: what every put refuses.
Imports: numpy and ml_dtypes only, no other trellis_jax package. Lifecycle: open, put/get, flush, close.
"""

from trellis_jax.kvstore.api import PAGE_KEY_BYTES, PageEntry, PageStore, chain_key
from trellis_jax.kvstore.disk import DiskPageStore
from trellis_jax.kvstore.fingerprint import fingerprint_of
from trellis_jax.kvstore.host import HostPageStore
from trellis_jax.kvstore.tiered import TieredPageStore

__all__ = [
    "PAGE_KEY_BYTES",
    "DiskPageStore",
    "HostPageStore",
    "PageEntry",
    "PageStore",
    "TieredPageStore",
    "chain_key",
    "fingerprint_of",
]
