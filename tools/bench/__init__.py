"""Benchmark harness: Trellis-JAX against the engines users would pick instead, on the same model.

Owns: deterministic workload generators (`workloads.py`), one runner per system (`runners/`), the
alternating harness (`harness.py`), metrics (`metrics.py`), the markdown/PNG report (`report.py`,
`plots.py`) and the BENCHMARKS.md section updater. Entry point: `python -m tools.bench --help`.
Peers (transformers, llama-cpp-python) are optional: the harness says which it found and skips the rest.
Nothing here is imported by the engine.
"""
