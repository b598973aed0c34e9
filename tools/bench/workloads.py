"""The five benchmark workloads, generated deterministically from a seed and sizes in tokens.

- shared_system: one system prompt, many different user questions (one wave).
- multi_turn:   several chats; turn t of a chat is its turn t-1 prompt plus a fixed assistant reply and a
                new user message (wave = turn, so each turn arrives after the previous one finished).
- few_shot:     several few-shot headers, many questions under each, interleaved header by header.
- agentic:      one long agent transcript (wave 0), then parallel continuations forking from it (wave 1).
- no_share:     unrelated prompts (control: nothing to reuse).
`generate(name, seed, sizes, tokenizer)` returns finalized `BenchRequest`s (prompt text, token ids, the
reuse oracle). The same (name, seed, sizes) always gives the same requests; text lengths are measured
with the tokenizer. Every piece of text draws on its own seeded `TextSource`.
"""

from __future__ import annotations

from collections.abc import Callable

from .requests import BenchRequest, finalize
from .text import TextSource

WORKLOADS = ("shared_system", "multi_turn", "few_shot", "agentic", "no_share")

# Sizes in tokens (and counts); "tiny" is for tests.
PRESETS: dict[str, dict[str, dict[str, int]]] = {
    "tiny": {
        "shared_system": dict(system_tokens=24, question_tokens=6, num_requests=3, max_tokens=2),
        "multi_turn": dict(system_tokens=16, turn_tokens=6, num_chats=2, num_turns=3, max_tokens=2),
        "few_shot": dict(header_tokens=20, question_tokens=6, num_headers=2, questions_per_header=2, max_tokens=2),
        "agentic": dict(trunk_tokens=30, branch_tokens=6, num_branches=3, max_tokens=2),
        "no_share": dict(prompt_tokens=20, num_requests=3, max_tokens=2),
    },
    # The default CPU table: two repeats of all ten systems fit ~30 minutes on the shared 2-core machine
    # (1-minute load average ~10 from other jobs, peers at 1 thread).
    "cpu": {
        "shared_system": dict(system_tokens=256, question_tokens=16, num_requests=6, max_tokens=8),
        "multi_turn": dict(system_tokens=64, turn_tokens=32, num_chats=2, num_turns=3, max_tokens=8),
        "few_shot": dict(header_tokens=192, question_tokens=16, num_headers=2, questions_per_header=3, max_tokens=8),
        "agentic": dict(trunk_tokens=384, branch_tokens=24, num_branches=4, max_tokens=8),
        "no_share": dict(prompt_tokens=128, num_requests=4, max_tokens=8),
    },
    # The same structure at about twice the lengths (and 16 output tokens) for an idle machine.
    "cpu-large": {
        "shared_system": dict(system_tokens=512, question_tokens=24, num_requests=12, max_tokens=16),
        "multi_turn": dict(system_tokens=96, turn_tokens=48, num_chats=3, num_turns=4, max_tokens=16),
        "few_shot": dict(header_tokens=384, question_tokens=24, num_headers=3, questions_per_header=4, max_tokens=16),
        "agentic": dict(trunk_tokens=768, branch_tokens=32, num_branches=8, max_tokens=16),
        "no_share": dict(prompt_tokens=256, num_requests=8, max_tokens=16),
    },
    # GPU mode (Llama-3.2-1B-shaped, bf16): longer prefixes, more requests, still minutes per system.
    "gpu": {
        "shared_system": dict(system_tokens=2048, question_tokens=48, num_requests=32, max_tokens=32),
        "multi_turn": dict(system_tokens=256, turn_tokens=128, num_chats=8, num_turns=4, max_tokens=32),
        "few_shot": dict(header_tokens=1024, question_tokens=48, num_headers=4, questions_per_header=8, max_tokens=32),
        "agentic": dict(trunk_tokens=4096, branch_tokens=64, num_branches=32, max_tokens=32),
        "no_share": dict(prompt_tokens=1024, num_requests=32, max_tokens=32),
    },
}


def generate(name: str, seed: int, sizes: dict[str, int], tokenizer) -> list[BenchRequest]:
    if name not in _GENERATORS:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}")
    count = tokenizer.count
    requests = _GENERATORS[name](seed, count, **sizes)
    return finalize(requests, tokenizer)


def _source(seed: int, *path) -> TextSource:
    return TextSource("/".join(str(p) for p in (seed, *path)))


def _shared_system(seed, count, *, system_tokens, question_tokens, num_requests, max_tokens):
    system = _source(seed, "system").text_of_tokens(system_tokens, count)
    return [
        BenchRequest(
            f"shared_system-{i}",
            "shared_system",
            0,
            [
                {"role": "system", "content": system},
                {"role": "user", "content": _source(seed, "q", i).text_of_tokens(question_tokens, count)},
            ],
            max_tokens,
        )
        for i in range(num_requests)
    ]


def _multi_turn(seed, count, *, system_tokens, turn_tokens, num_chats, num_turns, max_tokens):
    requests = []
    for chat in range(num_chats):
        messages = [{"role": "system", "content": _source(seed, "sys", chat).text_of_tokens(system_tokens, count)}]
        for turn in range(num_turns):
            if turn:
                reply = _source(seed, "reply", chat, turn).text_of_tokens(turn_tokens, count)
                messages = messages + [{"role": "assistant", "content": reply}]
            user = _source(seed, "user", chat, turn).text_of_tokens(turn_tokens, count)
            messages = messages + [{"role": "user", "content": user}]
            requests.append(BenchRequest(f"multi_turn-c{chat}-t{turn}", "multi_turn", turn, messages, max_tokens))
    return sorted(requests, key=lambda r: r.wave)


def _few_shot(seed, count, *, header_tokens, question_tokens, num_headers, questions_per_header, max_tokens):
    headers = [_source(seed, "header", h).text_of_tokens(header_tokens, count) for h in range(num_headers)]
    return [
        BenchRequest(
            f"few_shot-h{h}-q{q}",
            "few_shot",
            0,
            [
                {"role": "system", "content": headers[h]},
                {"role": "user", "content": _source(seed, "q", h, q).text_of_tokens(question_tokens, count)},
            ],
            max_tokens,
        )
        for q in range(questions_per_header)
        for h in range(num_headers)
    ]


def _agentic(seed, count, *, trunk_tokens, branch_tokens, num_branches, max_tokens):
    transcript = [
        {"role": "system", "content": _source(seed, "agent").text_of_tokens(64, count)},
        {"role": "user", "content": _source(seed, "task").text_of_tokens(max(trunk_tokens - 64, 1), count)},
    ]
    trunk = BenchRequest("agentic-trunk", "agentic", 0, transcript, max_tokens)
    branches = [
        BenchRequest(
            f"agentic-b{b}",
            "agentic",
            1,
            transcript
            + [
                {"role": "assistant", "content": f"Plan {b}: " + _source(seed, "plan", b).text_of_tokens(8, count)},
                {"role": "user", "content": _source(seed, "obs", b).text_of_tokens(branch_tokens, count)},
            ],
            max_tokens,
        )
        for b in range(num_branches)
    ]
    return [trunk] + branches


def _no_share(seed, count, *, prompt_tokens, num_requests, max_tokens):
    return [
        BenchRequest(
            f"no_share-{i}",
            "no_share",
            0,
            [
                {"role": "system", "content": _source(seed, "own", i).text_of_tokens(prompt_tokens, count)},
                {"role": "user", "content": _source(seed, "ask", i).text_of_tokens(8, count)},
            ],
            max_tokens,
        )
        for i in range(num_requests)
    ]


_GENERATORS: dict[str, Callable[..., list[BenchRequest]]] = {
    "shared_system": _shared_system,
    "multi_turn": _multi_turn,
    "few_shot": _few_shot,
    "agentic": _agentic,
    "no_share": _no_share,
}
