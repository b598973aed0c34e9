"""Deterministic filler text of a given token length.

`TextSource(seed)` draws English-looking sentences from a fixed word list with its own `random.Random`,
so the same seed always yields the same text, and two sources with different seeds share (almost) no
long substrings. `text_of_tokens(n, count_tokens)` appends sentences until `count_tokens(text) >= n`:
the length is measured with the model's tokenizer, not guessed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

_WORDS = (
    "the a model cache token prefix request engine server memory page tree branch node query answer "
    "question system user assistant data value table river mountain city market garden window letter "
    "number signal pattern method result report budget schedule planet orbit engine forest harbor "
    "winter summer morning evening quickly slowly carefully always never often rarely again today "
    "build check measure compare store reuse compute read write send receive open close start finish "
    "bright quiet heavy light simple complex early late small large green blue red golden silver "
    "because although while after before during under over between across through around near far "
    "student teacher doctor pilot farmer writer painter sailor miner baker chemist lawyer clerk "
    "apple bread coffee paper stone glass metal water fire cloud rain snow wind storm field road "
    "explain describe list count sort merge split find choose keep drop update return follow lead"
).split()

Counter = Callable[[str], int]


class TextSource:
    """A seeded stream of sentences; one instance per independent piece of a workload."""

    def __init__(self, seed: int | str):
        self._rng = random.Random(str(seed))

    def sentence(self) -> str:
        words = [self._rng.choice(_WORDS) for _ in range(self._rng.randint(6, 14))]
        return words[0].capitalize() + " " + " ".join(words[1:]) + "."

    def text_of_tokens(self, num_tokens: int, count_tokens: Counter) -> str:
        """Sentences joined by spaces until the text is at least `num_tokens` tokens long."""
        if num_tokens < 1:
            raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
        parts: list[str] = []
        while not parts or count_tokens(" ".join(parts)) < num_tokens:
            parts.append(self.sentence())
        return " ".join(parts)
