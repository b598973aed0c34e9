"""The overlapped loop's fed tokens: the last dispatched step's sampled ids, kept on the device.

A PENDING_TOKEN row (its token not yet on the host) reads its request's id from the previous step's `fed`
output instead of the wire (step.py): `column(packed)` says which row of it, per token row (-1: none),
`device_tokens()` is the array the next step takes, `record(fed, packed)` replaces both once a step was queued.
The array is `width` wide for every bucket, so any step can feed any other without a compile.
"""

from __future__ import annotations

import jax
import numpy as np

from trellis_jax.runner.packing import PackedStep


class TokenFeed:
    """The previous dispatched step's sampled ids (device) and the row of each request in them (host)."""

    def __init__(self, width: int, placement=None) -> None:
        self.width = width
        self.placement = placement  # a sharding for the first zeros (tensor parallel: whole on every device)
        self._fed: jax.Array | None = None  # the last dispatched step's sampled ids, on the device
        self._fed_rows: dict[str, int] = {}  # request id -> its row in self._fed

    def column(self, packed: PackedStep) -> np.ndarray:
        """[T] int32: for each PENDING_TOKEN row its request's row in the last dispatched step's tokens, else -1."""
        feed = np.full(packed.bucket.num_tokens, -1, np.int32)
        for token_row, request_id in packed.pending_rows:
            if request_id not in self._fed_rows:
                raise ValueError(f"request {request_id!r}: a pending token, but the previous step sampled none for it")
            feed[token_row] = self._fed_rows[request_id]
        return feed

    def device_tokens(self) -> jax.Array:
        """The previous step's fed ids (device-resident zeros before the first step)."""
        if self._fed is None:
            self._fed = jax.device_put(np.zeros(self.width, np.int32), self.placement)
        return self._fed

    def record(self, fed: jax.Array, packed: PackedStep) -> None:
        """A step was queued: its sampled ids `fed` are what the next step's pending rows read."""
        self._fed = fed
        self._fed_rows = {request_id: row for row, request_id, _ in packed.sampled_rows}
