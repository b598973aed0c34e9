"""IncrementalDetokenizer: the pieces concatenate to decode(ids), and no piece ends in a U+FFFD that
only stands for a character still being spelled out across tokens."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trellis_jax.tokenizer import IncrementalDetokenizer

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def stream(tokenizer, ids, skip_special_tokens=True):
    detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip_special_tokens)
    pieces = [detok.push(i) for i in ids]
    return pieces, detok.flush()


def byte_token_ids(tokenizer, data: bytes) -> list[int]:
    """One single-byte token per byte: forces multi-byte characters to be split across tokens. Bytes the
    vocabulary has no token for (SmolLM2 lacks 0xC0, 0xF1, ...) are left out, as its encoder drops them."""
    from trellis_jax.tokenizer.token_bytes import byte_alphabet

    to_char = {b: c for c, b in byte_alphabet().items()}
    ids = [tokenizer.token_to_id(to_char[b]) for b in data]
    return [i for i in ids if i is not None]


def assert_prefixes_final(pieces, full):
    """Every emitted prefix is already final: a prefix of the full decode (so no provisional U+FFFD)."""
    emitted = ""
    for piece in pieces:
        emitted += piece
        assert full.startswith(emitted)


def test_emoji_split_across_tokens_is_emitted_once_complete(smollm2):
    ids = byte_token_ids(smollm2, "a😀".encode())
    pieces, tail = stream(smollm2, ids)
    assert pieces == ["a", "", "", "", "😀"]
    assert tail == ""


def test_incomplete_character_at_end_is_flushed_as_decode_does(smollm2):
    ids = byte_token_ids(smollm2, "é".encode()[:1])
    pieces, tail = stream(smollm2, ids)
    assert pieces == [""]
    assert tail == smollm2.decode(ids) == "\ufffd"


def test_ascii_text_round_trips_through_the_stream(smollm2):
    text = "def f(x):\n    return x  # done"
    pieces, tail = stream(smollm2, smollm2.encode(text))
    assert "".join(pieces) + tail == text


def test_leading_spaces_survive_token_boundaries(smollm2):
    ids = smollm2.encode("Hello world, how are   you?")
    pieces, tail = stream(smollm2, ids)
    assert pieces[1] == " world"
    assert "".join(pieces) + tail == "Hello world, how are   you?"


def test_special_tokens_skipped_or_kept(smollm2):
    ids = smollm2.encode("<|im_start|>assistant\nHi<|im_end|>")
    assert "".join(stream(smollm2, ids)[0]) == "assistant\nHi"
    assert "".join(stream(smollm2, ids, skip_special_tokens=False)[0]) == "<|im_start|>assistant\nHi<|im_end|>"


@FAST
@given(text=st.text(max_size=60))
def test_random_unicode_text_streams_back_exactly(smollm2, text):
    ids = smollm2.encode(text, parse_special=False)
    pieces, tail = stream(smollm2, ids)
    full = smollm2.decode(ids)  # == text except for bytes the vocabulary cannot spell
    assert "".join(pieces) + tail == full
    assert_prefixes_final(pieces, full)


@FAST
@given(data=st.data(), skip=st.booleans())
def test_random_id_sequences_match_decode(smollm2, data, skip):
    # Mix arbitrary ids with low ids (specials and single bytes) so invalid UTF-8 and specials are common.
    token_id = st.one_of(st.integers(0, smollm2.vocab_size - 1), st.integers(0, 300))
    ids = data.draw(st.lists(token_id, max_size=40))
    pieces, tail = stream(smollm2, ids, skip_special_tokens=skip)
    full = smollm2.decode(ids, skip_special_tokens=skip)
    assert "".join(pieces) + tail == full
    assert_prefixes_final(pieces, full)


@FAST
@given(data=st.binary(max_size=24))
def test_random_bytes_one_token_each_match_decode(smollm2, data):
    ids = byte_token_ids(smollm2, data)
    pieces, tail = stream(smollm2, ids)
    full = smollm2.decode(ids)
    assert "".join(pieces) + tail == full
    assert_prefixes_final(pieces, full)
