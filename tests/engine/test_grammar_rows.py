"""GrammarRows on the tiny tokenizer (no model): masks on the right rows, advancing, completion, rejection."""

from __future__ import annotations

import numpy as np
import pytest

from trellis_jax.engine.grammar import GrammarCompiler, GrammarError, GrammarRows
from trellis_jax.engine.structured import StructuredOutput
from trellis_jax.scheduler.scheduler import draft_row_id
from trellis_jax.step_plan import SequenceWork, StepPlan
from trellis_jax.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(fixtures_dir):
    return Tokenizer.from_hf_dir(fixtures_dir / "tiny_llama")


@pytest.fixture(params=[True, False], ids=["prefetched", "inline"])
def rows(request, tokenizer):
    rows = GrammarRows(overlap=request.param)
    rows.add("g", GrammarCompiler(tokenizer).matcher(StructuredOutput("regex", "ab")))
    return rows


def allowed(mask) -> list[int]:
    return np.flatnonzero(np.unpackbits(np.asarray(mask).view(np.uint8), bitorder="little")).tolist()


def test_only_sample_rows_of_constrained_sequences_get_a_mask(rows):
    plan = StepPlan(
        [
            SequenceWork("g", [1], 0, [1], True),
            SequenceWork("p", [1], 0, [2], True),
            SequenceWork("q", [1], 0, [3], False),
        ]
    )
    got = rows.attach(plan).sequences
    assert got[0].bitmask is not None and got[1].bitmask is None and got[2].bitmask is None


def test_mask_follows_the_grammar_state(rows, tokenizer):
    a, b = tokenizer.encode("a", add_bos=False), tokenizer.encode("b", add_bos=False)
    assert len(a) == len(b) == 1
    first = rows.attach(StepPlan([SequenceWork("g", [1], 0, [1], True)])).sequences[0].bitmask
    assert allowed(first) == a
    assert rows.advance("g", a[0]) is False
    rows.prefetch()
    second = rows.attach(StepPlan([SequenceWork("g", [1], 1, [1], True)])).sequences[0].bitmask
    assert allowed(second) == b
    assert rows.advance("g", b[0]) is True  # "ab" is complete: nothing more may follow


def test_a_token_the_grammar_rejects_is_a_grammar_error(rows, tokenizer):
    with pytest.raises(GrammarError, match="'g'"):
        rows.advance("g", tokenizer.encode("b", add_bos=False)[0])


def test_dropped_sequences_leave_nothing_behind(rows):
    rows.prefetch()
    rows.drop("g")
    assert len(rows) == 0 and rows.advance("g", 5) is False


def test_draft_rows_get_the_mask_after_their_guesses_and_the_matcher_is_not_moved(rows, tokenizer):
    a, b = (tokenizer.encode(t, add_bos=False)[0] for t in "ab")
    plan = StepPlan(
        [
            SequenceWork("g", [1], 0, [1], True),
            SequenceWork(draft_row_id("g", 0), [a], 1, [1], True),
            SequenceWork(draft_row_id("g", 1), [a], 2, [1], True),  # "aa": the grammar rejects it
        ]
    )
    masks = [w.bitmask for w in rows.attach(plan).sequences]
    assert allowed(masks[0]) == [a] and allowed(masks[1]) == [b]
    assert (np.asarray(masks[2]) == -1).all()  # never accepted: the row before it cannot sample a second "a"
    assert rows.advance("g", a) is False  # the matcher still stood before "a"
