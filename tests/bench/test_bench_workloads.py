"""Workload generators: deterministic, seedable, of the stated sizes, with the sharing they claim."""

import pytest

from tools.bench.requests import common_prefix, read_jsonl, waves, write_jsonl
from tools.bench.workloads import PRESETS, WORKLOADS, generate

TINY = PRESETS["tiny"]


def _gen(name, tok, seed=0):
    return generate(name, seed, TINY[name], tok)


@pytest.mark.parametrize("name", WORKLOADS)
def test_same_seed_gives_identical_requests(name, word_tokenizer):
    assert [r.prompt for r in _gen(name, word_tokenizer)] == [r.prompt for r in _gen(name, word_tokenizer)]


@pytest.mark.parametrize("name", WORKLOADS)
def test_other_seed_gives_other_prompts(name, word_tokenizer):
    a, b = _gen(name, word_tokenizer, 0), _gen(name, word_tokenizer, 1)
    assert all(x.prompt != y.prompt for x, y in zip(a, b))


@pytest.mark.parametrize(
    "name,expected",
    [("shared_system", 3), ("multi_turn", 2 * 3), ("few_shot", 2 * 2), ("agentic", 1 + 3), ("no_share", 3)],
)
def test_request_counts_follow_the_sizes(name, expected, word_tokenizer):
    assert len(_gen(name, word_tokenizer)) == expected


def test_system_prompt_has_at_least_the_stated_tokens(word_tokenizer):
    for request in _gen("shared_system", word_tokenizer):
        assert word_tokenizer.count(request.messages[0]["content"]) >= TINY["shared_system"]["system_tokens"]


def test_every_request_asks_for_the_stated_output_length(word_tokenizer):
    assert {r.max_tokens for name in WORKLOADS for r in _gen(name, word_tokenizer)} == {2}


def test_shared_system_requests_after_the_first_can_reuse_the_system_prompt(word_tokenizer):
    requests = _gen("shared_system", word_tokenizer)
    assert requests[0].reusable_prefix_tokens == 0
    assert all(r.reusable_prefix_tokens >= TINY["shared_system"]["system_tokens"] for r in requests[1:])


def test_each_chat_turn_extends_the_previous_turn(word_tokenizer):
    requests = {r.id: r for r in _gen("multi_turn", word_tokenizer)}
    for turn in (1, 2):
        earlier, later = requests[f"multi_turn-c0-t{turn - 1}"], requests[f"multi_turn-c0-t{turn}"]
        assert later.prompt_token_ids[: earlier.num_prompt_tokens] == earlier.prompt_token_ids
        assert later.wave == earlier.wave + 1


def test_chat_turns_arrive_in_waves_by_turn(word_tokenizer):
    grouped = waves(_gen("multi_turn", word_tokenizer))
    assert [{r.id.split("-t")[1] for r in wave} for wave in grouped] == [{"0"}, {"1"}, {"2"}]


def test_few_shot_questions_are_interleaved_across_headers(word_tokenizer):
    requests = _gen("few_shot", word_tokenizer)
    headers = [r.messages[0]["content"] for r in requests]
    assert all(a != b for a, b in zip(headers, headers[1:]))
    assert len(set(headers)) == TINY["few_shot"]["num_headers"]


def test_agentic_branches_fork_from_the_trunk_after_it_finished(word_tokenizer):
    trunk, *branches = _gen("agentic", word_tokenizer)
    assert trunk.wave == 0 and {b.wave for b in branches} == {1}
    assert all(b.prompt.startswith(trunk.prompt) for b in branches)
    assert len({b.prompt for b in branches}) == len(branches)


def test_no_share_prompts_share_only_the_template_header(word_tokenizer):
    requests = _gen("no_share", word_tokenizer)
    assert max(r.reusable_prefix_tokens for r in requests) <= 1


def test_unknown_workload_is_a_clear_error(word_tokenizer):
    with pytest.raises(ValueError, match="unknown workload"):
        generate("nope", 0, {}, word_tokenizer)


def test_jsonl_round_trip_keeps_every_field(tmp_path, word_tokenizer):
    requests = _gen("agentic", word_tokenizer)
    write_jsonl(requests, tmp_path / "a.jsonl")
    assert read_jsonl(tmp_path / "a.jsonl") == requests


def test_common_prefix_counts_leading_equal_tokens():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0
