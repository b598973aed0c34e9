"""Test doubles for Trellis-JAX, outside the product package (pyproject ships only trellis_jax* and
pallas_kernels*).

Owns: `fakes` (FakeRunner, ByteTokenizer, ByteDetokenizer, make_fake_engine), used by the tests, by the
serve tests' subprocess and by tools/bench_engine.py, `scripted` (ScriptedRunner: a fake model that writes
what the test scripts, for the tool-call tests), and `drive` (run_all: step an engine until every
request has finished), and `kquant_blocks` (random GGUF Q4_K/Q5_K/Q6_K tensors built byte-wise). May import anything of trellis_jax; nothing in trellis_jax imports it (tests/test_layering.py checks). Importable from the repository root (tests run
with `python -m pytest` there; tools with `PYTHONPATH=.`).
"""
