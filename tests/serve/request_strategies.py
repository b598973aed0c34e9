"""Hypothesis strategies for hostile request bodies of /v1/completions and /v1/chat/completions.

Every field may hold anything JSON can carry: ints at and past the int32 / uint32 / int64 edges, NaN,
infinities and floats past float32, bools where numbers go, strings with lone surrogates ("\\ud800"),
NUL and special-token text, lists and objects where scalars go. Bodies are sent as `json.dumps` bytes
(NaN and Infinity included, surrogates escaped), which is what a hostile client can send. Each body is
a valid one with up to three fields replaced by hostile values, so examples reach both validation and
the engine; max_tokens is small unless it is one of the replaced fields.
"""

from __future__ import annotations

import json
import math

from hypothesis import strategies as st

EDGE_INTS = [
    0,
    1,
    -1,
    2,
    16,
    17,
    20,
    21,
    255,
    319,
    320,
    2**31 - 1,
    2**31,
    -(2**31),
    -(2**31) - 1,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
]
EDGE_FLOATS = [
    math.nan,
    math.inf,
    -math.inf,
    1e39,
    -1e39,
    3.4028235e38,
    3.4028236e38,
    0.0,
    -0.0,
    5e-324,
    0.5,
    1.0,
    1.0000001,
    2.0,
    2.0000001,
    -2.0000001,
    10.0,
    10.5,
]
ODD_STRINGS = [
    "\ud800",
    "a\udfffb",
    "\udc00\ud800",
    "\x00",
    "",
    " ",
    "<s>",
    "</s>",
    "<|im_start|>",
    "\u202e",
    "🦙",
    "\U0010ffff",
]

ints = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-3, 40))
floats = st.one_of(st.sampled_from(EDGE_FLOATS), st.floats(allow_nan=True, allow_infinity=True))
texts = st.one_of(
    st.sampled_from(ODD_STRINGS), st.text(st.characters(codec=None, categories=None), max_size=12)
)  # surrogates (Cs) included
scalars = st.one_of(ints, floats, texts, st.booleans(), st.none())
anything = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(texts, scalars, max_size=2))

SAMPLING_FIELDS = {
    "temperature": st.one_of(floats, anything),
    "top_p": st.one_of(floats, anything),
    "top_k": st.one_of(ints, anything),
    "min_p": floats,
    "presence_penalty": floats,
    "frequency_penalty": floats,
    "repetition_penalty": floats,
    "n": st.one_of(st.integers(1, 3), ints),
    "seed": st.one_of(ints, anything),
    "stop": st.one_of(texts, st.lists(texts, max_size=3), anything),
    "stop_token_ids": st.one_of(st.lists(ints, max_size=3), anything),
    "ignore_eos": anything,
    "skip_special_tokens": anything,
    "stream": st.booleans(),
    "cache_salt": st.one_of(texts, anything),
    "user": texts,
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": st.booleans()}), anything),
}
MAX_TOKENS = st.one_of(st.integers(1, 4), ints, floats, texts, st.none())
SHORT = st.integers(1, 4)
PLAIN_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=16)
VALID_IDS = st.lists(st.integers(0, 319), min_size=1, max_size=6)  # the tiny Llama's vocabulary is 320


def _with_overrides(base: dict, hostile: dict) -> st.SearchStrategy[dict]:
    """A valid body (`base`: field -> strategy) with up to three of its or `hostile`'s fields drawn from
    `hostile`: each example probes a few fields, so bodies both pass and fail validation."""
    names = st.lists(st.sampled_from(sorted(hostile)), max_size=3, unique=True)
    return st.tuples(
        st.fixed_dictionaries(base),
        names.flatmap(lambda chosen: st.fixed_dictionaries({name: hostile[name] for name in chosen})),
    ).map(lambda pair: {**pair[0], **pair[1]})


def completion_bodies(model: str) -> st.SearchStrategy[dict]:
    prompt = st.one_of(
        texts,
        st.lists(ints, min_size=1, max_size=5),
        st.lists(texts, min_size=1, max_size=2),
        st.lists(st.lists(ints, min_size=1, max_size=3), min_size=1, max_size=2),
        anything,
    )
    base = {"model": st.just(model), "prompt": st.one_of(PLAIN_TEXT, VALID_IDS), "max_tokens": SHORT}
    return _with_overrides(
        base,
        {
            **SAMPLING_FIELDS,
            "model": texts,
            "prompt": prompt,
            "max_tokens": MAX_TOKENS,
            "logprobs": st.one_of(ints, anything),
            "echo": anything,
            "best_of": ints,
            "suffix": texts,
        },
    )


def chat_bodies(model: str) -> st.SearchStrategy[dict]:
    content = st.one_of(
        texts,
        st.none(),
        st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}), max_size=2),
        anything,
    )
    message = st.one_of(
        st.fixed_dictionaries(
            {"role": st.one_of(st.sampled_from(["user", "system", "assistant"]), texts), "content": content}
        ),
        anything,
    )
    valid_message = st.fixed_dictionaries({"role": st.just("user"), "content": PLAIN_TEXT})
    base = {"model": st.just(model), "messages": st.lists(valid_message, min_size=1, max_size=2), "max_tokens": SHORT}
    return _with_overrides(
        base,
        {
            **SAMPLING_FIELDS,
            "model": texts,
            "messages": st.lists(message, max_size=3),
            "max_tokens": MAX_TOKENS,
            "logprobs": anything,
            "top_logprobs": st.one_of(ints, anything),
            "max_completion_tokens": MAX_TOKENS,
            "add_generation_prompt": anything,
            "chat_template_kwargs": anything,
        },
    )


def encode(body: dict) -> bytes:
    """What a client can put on the wire: NaN / Infinity as Python's json writes them, surrogates escaped."""
    return json.dumps(body).encode()


STEP_INT_FIELDS = ("top_k", "seed", "n", "max_tokens", "logprobs")  # reach the step's int32 / uint32 columns
STEP_FLOAT_FIELDS = ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty")


OVERFLOW_INTS = [2**31 - 1, 2**31, -(2**31) - 1, 2**32, 2**63, -(2**63) - 1, 2**64]  # around int32 / uint32 / int64
OVERFLOW_FLOATS = [math.nan, math.inf, -math.inf, 1e39, 3.4028236e38]  # not finite, or past float32


def edge_cases(model: str) -> list[tuple[str, dict]]:
    """Every field that reaches the step at every overflowing value, one field per body (the fuzzer's
    explicit examples: random draws alone rarely pair the one overflowing value with an otherwise valid
    body)."""
    base = {"model": model, "prompt": "edge", "max_tokens": 2}
    cases = [{field: value} for field in STEP_INT_FIELDS for value in OVERFLOW_INTS]
    cases += [{"stop_token_ids": [v]} for v in OVERFLOW_INTS] + [{"prompt": [1, v]} for v in OVERFLOW_INTS]
    cases += [{field: value} for field in STEP_FLOAT_FIELDS for value in OVERFLOW_FLOATS]
    chat = [{"top_logprobs": v, "logprobs": True} for v in OVERFLOW_INTS]
    chat += [{"max_completion_tokens": v} for v in OVERFLOW_INTS]
    messages = [{"role": "user", "content": "edge"}]
    return [("/v1/completions", {**base, **case}) for case in cases] + [
        ("/v1/chat/completions", {"model": model, "messages": messages, "max_tokens": 2, **case}) for case in chat
    ]
