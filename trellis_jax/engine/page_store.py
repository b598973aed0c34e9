"""make_page_store(config, loaded, runner): the page store below the device pool, from the engine's flags.

The one place where the radix cache's lower tiers meet the stores of trellis_jax/kvstore:
  --kv-host-bytes N     L2: HostPageStore(N) in RAM
  --kv-cache-dir DIR    L3: DiskPageStore(DIR, fingerprint, DISK_CAPACITY_BYTES) behind the host store
                        (TieredPageStore, write-through: every page put is queued for disk at once, so
                        a kill -9 loses only the queue), the host store sized by --kv-host-bytes or
                        DEFAULT_HOST_BYTES; its fingerprint covers everything that changes KV (weights,
                        tokenizer, chat template, dtypes, page size, RoPE), so another model's pages are refused
neither               None: eviction drops pages, as without tiers.
Any object with the kvstore.api PageStore protocol works in its place (Engine / TierMover take any).
`persisted_source(store)`: where a restart's prefetch reads (the disk tier), or None for a store in RAM only.
"""

from __future__ import annotations

import dataclasses
import os

from trellis_jax.engine.config import EngineConfig

DEFAULT_HOST_BYTES = 1 << 30
DISK_CAPACITY_BYTES = 16 << 30


def make_page_store(config: EngineConfig, loaded, runner):
    """The store for `config`'s flags (see the module docstring), or None when neither flag is given."""
    if config.kv_host_bytes is None and config.kv_cache_dir is None:
        return None
    try:
        from trellis_jax.kvstore import DiskPageStore, HostPageStore, TieredPageStore, fingerprint_of
    except ImportError as error:
        raise ValueError(f"--kv-host-bytes / --kv-cache-dir need trellis_jax.kvstore's page stores: {error}") from None
    host = HostPageStore(config.kv_host_bytes_value or DEFAULT_HOST_BYTES)
    if config.kv_cache_dir is None:
        return host
    model = loaded.config
    fingerprint = fingerprint_of(
        weights=_weight_files(loaded.source),
        tokenizer=None,  # GGUF holds it; an HF directory's tokenizer.json is among the hashed files
        chat_template=_template_text(config),
        dtype=str(model.dtype),
        kv_dtype=str(runner.kv_dtype),
        page_size=config.page_size,
        rope={"theta": model.rope_theta, "scaling": _plain(model.rope_scaling)},
        arithmetic={  # the same weights give other KV bits under another kernel path
            "weight_format": config.weight_format,
            "quantization": config.quantization,
            "tensor_parallel_size": config.tensor_parallel_size,
            "deterministic": config.deterministic,
        },
        hash_cache_dir=config.kv_cache_dir,
    )
    disk = DiskPageStore(config.kv_cache_dir, fingerprint, DISK_CAPACITY_BYTES)
    return TieredPageStore(host, disk, write_through=True)  # every put queued for disk: kill -9 loses the queue


def _weight_files(source: str) -> list[str]:
    if os.path.isfile(source):
        return [source]
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if n.endswith((".safetensors", ".gguf", ".json")))
        if names:
            return [os.path.join(source, n) for n in names]
    raise ValueError(f"--kv-cache-dir needs a model from files to fingerprint its KV, got {source!r}")


def _template_text(config: EngineConfig) -> str | None:
    if config.chat_template is None:
        return None
    with open(config.chat_template, encoding="utf-8") as f:
        return f.read()


def _plain(value):
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def persisted_source(store):
    """The disk store below `store` (itself if it is one): what a restart's pages are read back from by the
    prefetch thread (DiskPageStore.get is thread-safe and checks each page); None without a disk tier."""
    from trellis_jax.kvstore import DiskPageStore

    disk = getattr(store, "disk", store)
    return disk if isinstance(disk, DiskPageStore) else None
