"""`shard_map(f, *, mesh, in_specs, out_specs)` across JAX versions, with replication checks off.

`jax.shard_map` (JAX >= 0.7, `check_vma=`) where it exists, else `jax.experimental.shard_map.shard_map`
(`check_rep=`). The checks are off because the per-shard bodies call native kernels (FFI custom calls) whose
outputs JAX cannot prove replicated; tensor_parallel.py states which outputs are whole on every device.
"""

from __future__ import annotations

import jax

if hasattr(jax, "shard_map"):
    _shard_map, _NO_CHECK = jax.shard_map, {"check_vma": False}
else:  # pragma: no cover - older JAX
    from jax.experimental.shard_map import shard_map as _shard_map

    _NO_CHECK = {"check_rep": False}


def shard_map(f, *, mesh, in_specs, out_specs):
    """f run once per device of `mesh` on its blocks (see jax.shard_map); no replication checks."""
    return _shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, **_NO_CHECK)
