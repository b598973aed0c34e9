"""Logical axis names of every weight and of the KV pages, and the one rules table that maps them onto a mesh.

The model names what each array axis means (`PARAM_AXES`, `KV_AXES`); `RULES` says which mesh axis splits
each logical one (None: replicated). Tensor parallelism over a 1-D mesh axis "tp" is Megatron's split: the
projections that read the residual stream are split by output (heads, kv_heads, mlp: column parallel), the
ones that write it by input (row parallel, so each shard adds a partial sum), the KV pages by KV head. The
embedding, norms and the LM head stay whole on every shard (the head's logits are needed whole for
sampling). Names are those of `model/params.py`; fused layouts (w_qkv, w_gate_up) are prepared per shard
by the matmul op, so they inherit the axes of their parts.
"""

from __future__ import annotations

TP = "tp"  # the mesh axis tensor parallelism splits over

PARAM_AXES: dict = {
    "embed": ("vocab", "embed"),
    "final_norm": ("embed",),
    "lm_head": ("embed", "vocab"),
    "layers": {
        "attn_norm": ("layers", "embed"),
        "wq": ("layers", "embed", "heads"),
        "wk": ("layers", "embed", "kv_heads"),
        "wv": ("layers", "embed", "kv_heads"),
        "wo": ("layers", "heads", "embed"),
        "bq": ("layers", "heads"),
        "bk": ("layers", "kv_heads"),
        "bv": ("layers", "kv_heads"),
        "mlp_norm": ("layers", "embed"),
        "w_gate": ("layers", "embed", "mlp"),
        "w_up": ("layers", "embed", "mlp"),
        "w_down": ("layers", "mlp", "embed"),
    },
}

KV_AXES = ("layers", "kv_heads", "pages", "page_slots", "head_dim")  # KVPages.k / .v

RULES: tuple[tuple[str, str | None], ...] = (
    ("heads", TP),
    ("kv_heads", TP),
    ("mlp", TP),
    ("vocab", None),
    ("embed", None),
    ("layers", None),
    ("pages", None),
    ("page_slots", None),
    ("head_dim", None),
)


def mesh_axes(logical: tuple[str, ...], rules=RULES) -> tuple[str | None, ...]:
    """The mesh axis (or None) for each logical axis, by the rules table; KeyError names an unmapped axis."""
    table = dict(rules)
    missing = [name for name in logical if name not in table]
    if missing:
        raise KeyError(f"no sharding rule for logical axes {missing}")
    return tuple(table[name] for name in logical)
