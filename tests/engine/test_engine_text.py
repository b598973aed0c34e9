"""Engine text side over the fake runner: stop strings across token boundaries, streaming hold-back, EOS."""

from trellis_jax.engine.api import LLM, SamplingParams
from trellis_testing.fakes import EOS_ID, make_fake_engine


def fake_llm(**options):
    engine, runner, cache, tokenizer = make_fake_engine(mode="increment", **options)
    return LLM.from_engine(engine, tokenizer), engine


def test_stop_string_split_across_tokens_ends_the_completion():
    llm, _ = fake_llm()
    # "increment": after "a" (97) comes b, c, d, e, ... one byte per token
    out = llm.generate("a", SamplingParams(temperature=0, max_tokens=20, stop=["de"]))[0]
    assert out.text == "bc"
    assert out.finish_reason == "stop"
    assert out.token_ids == [ord(c) for c in "bcde"]


def test_earliest_stop_string_wins():
    llm, _ = fake_llm()
    out = llm.generate("a", SamplingParams(temperature=0, max_tokens=20, stop=["fgh", "cd"]))[0]
    assert out.text == "b"


def test_stop_string_frees_the_sequence_in_the_scheduler():
    llm, engine = fake_llm()
    llm.generate("a", SamplingParams(temperature=0, max_tokens=20, stop=["c"]))
    assert not engine.scheduler.has_unfinished()
    assert engine.scheduler.kv.cache.num_private_pages == 0


def test_streaming_holds_back_a_possible_stop_string_start():
    engine, *_, tokenizer = make_fake_engine(mode="increment")
    engine.add_request("r", tokenizer.encode("a"), SamplingParams(temperature=0, max_tokens=20, stop=["cdx", "fg"]))
    texts = []
    while engine.has_unfinished():
        texts += [(d.text, d.finish_reason) for d in engine.step()]
    assert "".join(t for t, _ in texts) == "bcde"
    assert texts[-1][1] == "stop"
    assert ("c", None) not in texts  # "c" could have started "cdx": it came out only with "d"


def test_eos_token_is_in_token_ids_not_in_text():
    llm, _ = fake_llm()
    prompt = [EOS_ID - 3]  # 254 -> 255 -> 256 (BOS, special) -> 257 (EOS)
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=10))[0]
    assert out.token_ids == [255, 256, 257]
    assert out.finish_reason == "stop"
    assert "\x00" not in out.text and "</s>" not in out.text


def test_ignore_eos_generates_through_it():
    llm, _ = fake_llm()
    out = llm.generate([[EOS_ID - 1]], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert out.token_ids == [257, 0, 1]
    assert out.finish_reason == "length"


def test_stop_token_ids_end_with_stop():
    llm, _ = fake_llm()
    out = llm.generate("a", SamplingParams(temperature=0, max_tokens=10, stop_token_ids=[ord("d")]))[0]
    assert out.text == "bc" and out.finish_reason == "stop"


def test_multibyte_character_split_across_tokens_decodes_whole():
    llm, _ = fake_llm(num_pages=64)
    euro = "€".encode()  # 3 bytes; "increment" cannot make it, so feed it as the prompt and stop at once
    out = llm.generate([[*euro]], SamplingParams(temperature=0, max_tokens=1))[0]
    assert out.token_ids == [euro[-1] + 1]
