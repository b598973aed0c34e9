"""Cache-policy research kit: replay request traces through the production ``RadixCache`` in
simulation mode (no model, no device), over a grid of policies x capacities x page sizes x scheduling
orders, against an offline optimal bound; plots and a markdown summary. ``python -m trellis_jax.ablate``.

Owns: trace formats and generators (``trace``, ``synthetic``, ``workloads``, ``chatlog``), the replay
(``replay``, ``queueing``), the bounds (``optimal``: relaxed upper bound; ``clairvoyant``: achievable
with future knowledge), the grid and its outputs (``grid``, ``report``, ``plots``), example policies
(``policies``), the live comparison with the engine (``live``), the speed check (``speed``), and the
simulated host/disk tiers below the pool with their bounds (``tiers``, ``tiered_replay``, ``tier_bounds``,
``tier_rows``).
May import: ``trellis_jax.cache`` (the same classes the engine uses; no tree is reimplemented here),
numpy, the model's cost formula (lazily), the tokenizer (text traces), matplotlib (plots only) and, for
the live mode only, the engine.
"""

from trellis_jax.ablate.grid import GridSpec, run_grid
from trellis_jax.ablate.replay import ReplayConfig, ReplayResult, replay
from trellis_jax.ablate.synthetic import SyntheticSpec, generate
from trellis_jax.ablate.trace import Trace, TraceError, TraceRequest, read_jsonl, write_jsonl

__all__ = [
    "GridSpec",
    "ReplayConfig",
    "ReplayResult",
    "SyntheticSpec",
    "Trace",
    "TraceError",
    "TraceRequest",
    "generate",
    "read_jsonl",
    "replay",
    "run_grid",
    "write_jsonl",
]
