"""chex's shape, dtype and tree assertions with the project's error type: a ValueError naming what is wrong.

Contract: `with as_value_error("what must hold, with the values"):` around chex assertions re-raises their
AssertionError as ValueError(f"{what}: {chex's detail}"), so a caller handing the model bad inputs gets the
same kind of error as any other bad input (docs/CONTRACTS.md: bad input -> ValueError), never an assert.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def as_value_error(what: str):
    try:
        yield
    except AssertionError as error:
        raise ValueError(f"{what}: {error}") from None
