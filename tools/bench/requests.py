"""One benchmark request, its JSONL form, and the ideal prefix reuse of a request list.

A workload is a list of `BenchRequest`s in arrival order. `wave` orders them in time: every request
of wave w arrives when all of wave w-1 has finished (a chat's next turn comes after the previous
answer); requests of one wave arrive together. `reusable_prefix_tokens` is an oracle: the longest
token prefix the request shares with any earlier request (earlier in the list) — the most a perfect
prefix cache that never evicts could skip. Output lengths are fixed (`max_tokens`, EOS ignored) so
every system generates the same number of tokens.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class BenchRequest:
    id: str
    workload: str
    wave: int
    messages: list[dict]
    max_tokens: int
    prompt: str = ""
    prompt_token_ids: list[int] = field(default_factory=list)
    reusable_prefix_tokens: int = 0

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)


def finalize(requests: list[BenchRequest], tokenizer) -> list[BenchRequest]:
    """Render each request's prompt, tokenize it, and fill in the reuse oracle (in place)."""
    for request in requests:
        request.prompt = tokenizer.render(request.messages)
        request.prompt_token_ids = tokenizer.encode(request.prompt)
    fill_reusable_prefix(requests)
    return requests


def fill_reusable_prefix(requests: list[BenchRequest]) -> None:
    seen: list[list[int]] = []
    for request in requests:
        ids = request.prompt_token_ids
        request.reusable_prefix_tokens = max((common_prefix(ids, other) for other in seen), default=0)
        seen.append(ids)


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def waves(requests: list[BenchRequest]) -> list[list[BenchRequest]]:
    """Requests grouped by wave, waves ascending, arrival order kept inside each wave."""
    by_wave: dict[int, list[BenchRequest]] = {}
    for request in requests:
        by_wave.setdefault(request.wave, []).append(request)
    return [by_wave[w] for w in sorted(by_wave)]


def write_jsonl(requests: list[BenchRequest], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for request in requests:
            f.write(json.dumps(asdict(request)) + "\n")


def read_jsonl(path: Path) -> list[BenchRequest]:
    with open(path) as f:
        return [BenchRequest(**json.loads(line)) for line in f if line.strip()]
