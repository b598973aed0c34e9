"""LLM.close and `with LLM(...)`: they close the engine (its page store gets the cached prefixes and is
closed), a second close does nothing, and generate after close is refused."""

import pytest

from trellis_jax.engine.api import LLM, SamplingParams
from trellis_testing.dict_page_store import DictPageStore
from trellis_testing.fakes import make_fake_engine

PARAMS = SamplingParams(temperature=0, max_tokens=2)
PROMPT = list(range(10, 30))  # five whole 4-token pages


def llm_over_a_store():
    store = DictPageStore()
    engine, _, _, tokenizer = make_fake_engine(page_store=store)
    return LLM.from_engine(engine, tokenizer), store


def test_close_persists_the_cached_prefix_and_closes_the_store():
    llm, store = llm_over_a_store()
    llm.generate(PROMPT, PARAMS)
    llm.close()
    assert store.closed
    assert store.stats()["bytes_written"] > 0


def test_leaving_a_with_block_closes_the_engine():
    llm, store = llm_over_a_store()
    with llm as entered:
        entered.generate(PROMPT, PARAMS)
    assert entered is llm and store.closed


def test_an_exception_in_the_with_block_still_closes_and_propagates():
    llm, store = llm_over_a_store()
    with pytest.raises(KeyError), llm:
        raise KeyError("boom")
    assert store.closed


def test_closing_twice_is_harmless():
    llm, store = llm_over_a_store()
    llm.generate(PROMPT, PARAMS)
    llm.close()
    written = store.stats()["bytes_written"]
    llm.close()
    assert store.stats()["bytes_written"] == written


def test_generate_after_close_is_a_clear_error_and_queues_nothing():
    llm, _ = llm_over_a_store()
    llm.close()
    with pytest.raises(RuntimeError, match="closed"):
        llm.generate(PROMPT, PARAMS)
    assert not llm.engine.has_unfinished()
