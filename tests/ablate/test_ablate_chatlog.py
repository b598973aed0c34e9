"""Chat-log import: one request per assistant turn, rendered like serving, so the next turn hits the reply."""

import json

import pytest

from trellis_jax.ablate import ReplayConfig, replay
from trellis_jax.ablate.chatlog import read_chat_log
from trellis_jax.ablate.trace import TraceError

EOT = 3


class TinyChatTokenizer:
    """One token per word; a turn renders as [role id] words [EOT]; the generation prompt is [role id of assistant]."""

    ROLES = {"system": 10, "user": 11, "assistant": 12}
    eos_token_ids = (EOT, 0)

    def __init__(self):
        self.vocab = {}

    def encode(self, text, parse_special=True, add_bos=None):
        return [self.vocab.setdefault(w, 100 + len(self.vocab)) for w in text.split()]

    def encode_chat(self, messages, add_generation_prompt=True):
        ids = []
        for m in messages:
            ids += [self.ROLES[m["role"]]] + self.encode(m["content"]) + [EOT]
        return ids + ([self.ROLES["assistant"]] if add_generation_prompt else [])


def conversation(*turns):
    roles = ["user", "assistant"]
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]}


def write_log(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_one_request_per_assistant_turn_plus_a_trailing_user_turn(tmp_path):
    path = write_log(tmp_path / "c.jsonl", conversation("hi", "hello there", "how are you", "fine", "bye"))
    trace = read_chat_log(path, TinyChatTokenizer(), order="sequential")
    assert [r.output_len for r in trace.requests] == [3, 2, 0]  # reply words + end of turn; none at the end


def test_prompt_is_the_rendered_history_and_output_the_reply(tmp_path):
    tok = TinyChatTokenizer()
    trace = read_chat_log(write_log(tmp_path / "c.jsonl", conversation("hi", "hello there")), tok)
    request = trace.requests[0]
    assert request.prompt.tolist() == [11, tok.vocab["hi"], EOT, 12]
    assert request.output.tolist() == [tok.vocab["hello"], tok.vocab["there"], EOT]


def test_second_turn_hits_the_first_turn_and_its_reply(tmp_path):
    path = write_log(tmp_path / "c.jsonl", conversation("a b c", "d e f g", "h i", "j"))
    trace = read_chat_log(path, TinyChatTokenizer(), order="sequential")
    # turn 1 KV: prompt [user a b c EOT assistant] (6) + reply [d e f g EOT] minus its last token (4) = 10
    # tokens; turn 2's prompt (16 tokens) renders them back first, so 10 of its 15 matchable tokens hit
    result = replay(trace, ReplayConfig(num_pages=64, page_size=1))
    assert result.cached_tokens.tolist() == [0, 10]


def test_interleaving_round_robins_open_conversations(tmp_path):
    path = write_log(
        tmp_path / "c.jsonl", conversation("a", "b", "c", "d"), conversation("e", "f", "g", "h"), conversation("i", "j")
    )
    trace = read_chat_log(path, TinyChatTokenizer(), order="interleaved", concurrent=2)
    assert [r.request_id for r in trace.requests] == ["c1-t0", "c2-t0", "c1-t1", "c2-t1", "c3-t0"]


def test_namespace_is_carried(tmp_path):
    record = dict(conversation("a", "b"), namespace="tenant7")
    trace = read_chat_log(write_log(tmp_path / "c.jsonl", record), TinyChatTokenizer())
    assert trace.requests[0].namespace == "tenant7"


def test_message_without_content_names_the_line(tmp_path):
    path = write_log(tmp_path / "c.jsonl", conversation("a", "b"), {"messages": [{"role": "user"}]})
    with pytest.raises(TraceError, match=r"c.jsonl:2: .*content"):
        read_chat_log(path, TinyChatTokenizer())
