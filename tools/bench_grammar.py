"""Structured-output overhead: decode with a JSON-schema grammar on every row vs the same decode without one.

    python tools/bench_grammar.py [--model SPEC] [--batches 1 8] [--tokens 64] [--repeats 3]

Per batch size B: B requests of one short prompt each, temperature 0.8, every one generating exactly
--tokens tokens: unconstrained with ignore_eos, constrained by a schema that cannot complete in that many
tokens (an array of at least 1000 strings), so both runs do the same number of steps. Reported per run,
median of --repeats alternating pairs: decode tok/s (steps after the prefill) and, for the grammar run,
the host time per step spent on grammar work on the engine thread (waiting for masks in
GrammarRows.attach, advancing matchers, packing the bitmask) and on the mask worker thread.
Compiles 4 buckets (tokens 8/64 x seqs 1/max(batches)); the persistent compile cache keeps them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

from trellis_jax.engine import grammar as grammar_module
from trellis_jax.engine.api import LLM, SamplingParams, StructuredOutput
from trellis_jax.runner import constraints

LONG_ARRAY = StructuredOutput(
    "json_schema", json.dumps({"type": "array", "items": {"type": "string"}, "minItems": 1000})
)


class Clock:
    """Seconds spent inside the wrapped callables (engine thread and mask worker counted apart)."""

    def __init__(self) -> None:
        self.engine = 0.0
        self.worker = 0.0

    def wrap(self, owner, name: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                if threading.current_thread() is threading.main_thread():
                    self.engine += spent
                else:
                    self.worker += spent

        setattr(owner, name, timed)


def run(llm: LLM, batch: int, tokens: int, grammar: bool, seed: int) -> tuple[float, float, int]:
    """(decode wall seconds, decode process CPU seconds, decode steps): the steps after every request has its
    first token."""
    params = [
        SamplingParams(
            temperature=0.8,
            seed=seed + i,
            max_tokens=tokens,
            ignore_eos=not grammar,
            structured_output=LONG_ARRAY if grammar else None,
        )
        for i in range(batch)
    ]
    engine = llm.engine
    for i, p in enumerate(params):
        engine.add_request(f"b{seed}-{i}", llm.tokenizer.encode(f"List item {i}:"), p)
    started = 0
    while started < batch:  # prefill until every request has sampled its first token
        started += sum(1 for d in engine.step() if d.num_output_tokens == 1)
    start, cpu, steps = time.perf_counter(), time.process_time(), 0
    while engine.has_unfinished():
        engine.step()
        steps += 1
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    outputs = engine.pop_finished()
    assert all(len(c.token_ids) == tokens for o in outputs for c in o.outputs), "a run ended early"
    return elapsed, cpu, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    seqs = max(args.batches)
    llm = LLM(
        args.model,
        max_num_seqs=seqs,
        max_num_batched_tokens=64,
        token_buckets=(8, 64),
        seq_buckets=tuple(sorted({1, seqs})),
        max_model_len=512,
    )
    clock = Clock()
    for name in ("attach", "advance"):
        clock.wrap(grammar_module.GrammarRows, name)
    clock.wrap(grammar_module, "_masks")  # inline (engine thread) or prefetched (worker thread)
    clock.wrap(constraints, "constraint_arrays")
    run(llm, 1, 4, True, 0)  # load llguidance, build the LLTokenizer
    rows = llm.engine._grammar_rows
    print(f"model={llm.config.model or 'default'} tokens={args.tokens} repeats={args.repeats}")
    print(
        "| batch | masks | plain tok/s (per CPU-s) | grammar tok/s (per CPU-s) | overhead wall (CPU) "
        "| step ms | engine-thread grammar ms/step | worker ms/step |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batches:
        plain, constrained = [], {True: [], False: []}
        host, worker = {True: [], False: []}, {True: [], False: []}
        for r in range(args.repeats):
            seconds, cpu, steps = run(llm, batch, args.tokens, False, 100 * r)
            plain.append((batch * steps / seconds, batch * steps / cpu, seconds / steps))
            for overlap in (True, False):
                rows.overlap = overlap
                clock.engine = clock.worker = 0.0
                seconds, cpu, steps = run(llm, batch, args.tokens, True, 100 * r)
                constrained[overlap].append((batch * steps / seconds, batch * steps / cpu, seconds / steps))
                host[overlap].append(clock.engine / steps * 1e3)
                worker[overlap].append(clock.worker / steps * 1e3)
        p_wall, p_cpu = (statistics.median(x[i] for x in plain) for i in (0, 1))
        for overlap in (True, False):
            g_wall, g_cpu, g_step = (statistics.median(x[i] for x in constrained[overlap]) for i in (0, 1, 2))
            print(
                f"| {batch} | {'prefetched' if overlap else 'inline'} | {p_wall:.1f} ({p_cpu:.1f}) | "
                f"{g_wall:.1f} ({g_cpu:.1f}) | {100 * (p_wall - g_wall) / p_wall:+.1f} % "
                f"({100 * (p_cpu - g_cpu) / p_cpu:+.1f} %) | {g_step * 1e3:.1f} | "
                f"{statistics.median(host[overlap]):.2f} | {statistics.median(worker[overlap]):.2f} |"
            )


if __name__ == "__main__":
    main()
