"""A damaged or foreign --kv-cache-dir under a real engine (tiny models, deterministic): flipped bytes in
page files, truncated page files, another model's cache and another page size are each refused, counted in
/metrics (trellis_kv_store_refused_corrupt_total), and the restarted engine's output equals a cold one's."""

from __future__ import annotations

import pathlib

from trellis_jax.engine.builder import build_engine, make_runner
from trellis_jax.serve.tier_metrics import tier_metrics
from trellis_testing.kv_restart import ask, restart_config


def fill(directory, loaded, runner, **overrides) -> list[pathlib.Path]:
    """An engine serves one request on `directory` and stops cleanly; -> the page files it left."""
    engine, _ = build_engine(restart_config(kv_cache_dir=str(directory), **overrides), loaded, runner)
    ask(engine, "a", 0)
    engine.close()
    files = sorted(pathlib.Path(directory).rglob("*.kvp"))
    assert files, "the clean stop wrote no pages"
    return files


def restart(directory, llama):
    """A llama engine on `directory` answers the second question; -> (its completion, its refused count)."""
    engine, _ = build_engine(restart_config(kv_cache_dir=str(directory)), *llama)
    engine.tiers.cost.prefill_tokens_per_s = 1.0  # reload whatever it can: a bad page must not slip through
    output = ask(engine, "b", 1)
    families = {f.name: f for f in tier_metrics(engine.tier_stats())}
    refused = families["trellis_kv_store_refused_corrupt"].samples[0].value
    engine.close()
    return output, refused


def test_flipped_bytes_in_pages_are_refused(llama, cold_output, tmp_path):
    for path in fill(tmp_path, *llama):
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # the payload's last byte: the header still parses, the checksum does not match
        path.write_bytes(bytes(data))
    output, refused = restart(tmp_path, llama)
    assert refused >= 1
    assert output.num_cached_tokens == 0
    assert output.token_ids == cold_output.token_ids


def test_truncated_pages_are_refused(llama, cold_output, tmp_path):
    files = fill(tmp_path, *llama)
    for path in files:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    output, refused = restart(tmp_path, llama)
    assert refused == len(files)
    assert output.num_cached_tokens == 0
    assert output.token_ids == cold_output.token_ids


def test_another_models_cache_is_refused(llama, cold_output, tiny_model, tmp_path):
    mistral = tiny_model("mistral")
    files = fill(tmp_path, mistral, make_runner(restart_config(), mistral))
    output, refused = restart(tmp_path, llama)
    assert refused == len(files)
    assert output.num_cached_tokens == 0
    assert output.token_ids == cold_output.token_ids


def test_another_page_size_is_refused(llama, cold_output, tmp_path):
    loaded = llama[0]
    files = fill(tmp_path, loaded, make_runner(restart_config(page_size=32), loaded), page_size=32)
    output, refused = restart(tmp_path, llama)
    assert refused == len(files)
    assert output.num_cached_tokens == 0
    assert output.token_ids == cold_output.token_ids
