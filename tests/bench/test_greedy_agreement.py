"""tools.greedy_agreement's counting: identical runs and the first token where they part."""

import json

import pytest

from tools.greedy_agreement import bench_prompts, first_divergence, main, summary


def test_first_divergence_is_the_first_differing_position_or_the_common_length():
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2, 3], [1, 2, 3]) == 3
    assert first_divergence([1, 2], [1, 2, 3]) == 2


def test_summary_counts_prompts_identical_to_each_reference():
    runs = {"trellis-f32": [[1, 2], [3, 4]], "llama.cpp-F32": [[1, 2], [3, 5]], "trellis-bf16": [[1, 9], [3, 5]]}
    rows = {r["system"]: r for r in summary(runs)}
    assert rows["trellis-bf16"]["identical_to_trellis-f32"] == 0
    assert rows["trellis-bf16"]["identical_to_llama.cpp-F32"] == 1
    assert rows["trellis-bf16"]["first_divergence"] == [1, 1]
    assert rows["trellis-f32"]["identical_to_trellis-f32"] == 2


def test_summary_counts_agreement_with_llama_cpp_q4_1_where_it_ran():
    runs = {"trellis-f32": [[1, 2], [3, 4]], "llama.cpp-Q4_1": [[1, 2], [3, 5]], "trellis-packed": [[1, 2], [3, 5]]}
    rows = {r["system"]: r for r in summary(runs)}
    assert rows["trellis-packed"]["identical_to_llama.cpp-Q4_1"] == 2
    assert rows["trellis-packed"]["identical_to_trellis-f32"] == 1
    assert "identical_to_llama.cpp-F32" not in rows["trellis-packed"]


def test_add_runs_refuses_a_file_made_with_another_max_tokens(tmp_path):
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"tokens": {"trellis-f32": [[1, 2]] * len(bench_prompts())}}))
    with pytest.raises(SystemExit):
        main(["--systems", "", "--max-tokens", "3", "--add-runs", str(earlier)])
