"""Offline batch job: `python -m trellis_jax.batch --input requests.jsonl --output results.jsonl`.

Line formats: trellis_jax/engine/batch_io.py. Runs every request through one Engine (continuous
batching over the radix cache), writing each result as soon as it finishes, so an interrupted job
resumes where it stopped (ids already in the output are skipped). A bad line, a request that can
never fit, or one that a step could not run (engine.RequestFailed: the others run on), is reported with
its line number on stderr and skipped. A progress bar shows requests,
tokens/s and the cache hit rate; a summary is printed at the end (requests, tokens, throughput, prefill
tokens skipped thanks to the cache).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from trellis_jax.dtypes import DTYPE_CHOICES
from trellis_jax.engine.batch_io import BatchItem, completed_ids, read_items, result_line
from trellis_jax.engine.engine import Engine
from trellis_jax.engine.prompts import to_token_ids
from trellis_jax.engine.sampling_params import SamplingParams


@dataclass
class BatchSummary:
    completed: int = 0
    skipped_done: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0

    @property
    def cache_hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def describe(self) -> str:
        rate = (self.prompt_tokens - self.cached_tokens + self.output_tokens) / self.seconds if self.seconds else 0.0
        return (f"{self.completed} requests done, {self.skipped_done} already in the output, "
                f"{len(self.bad_lines)} bad lines skipped; {self.prompt_tokens} prompt tokens "
                f"({self.cached_tokens} = {self.cache_hit_rate:.1%} skipped thanks to the cache), "
                f"{self.output_tokens} generated in {self.seconds:.1f} s: {self.output_tokens / max(self.seconds, 1e-9):.1f} "
                f"generated tok/s, {rate:.1f} computed tok/s")


def run_batch(engine: Engine, tokenizer, input_path: str, output_path: str, *,
              default_sampling: SamplingParams = SamplingParams(max_tokens=256), max_pending: int = 1024,
              progress: bool = True, log=sys.stderr) -> BatchSummary:
    summary = BatchSummary()
    done = completed_ids(output_path)
    items = deque()
    seen: set[str] = set()
    for item in read_items(input_path, default_sampling):
        if not isinstance(item, BatchItem):
            _bad(summary, log, *item)
        elif item.request_id in seen:
            _bad(summary, log, item.line_number, f"duplicate id {item.request_id!r}")
        elif item.request_id in done:
            seen.add(item.request_id)
            summary.skipped_done += 1
        else:
            seen.add(item.request_id)
            items.append(item)
    lines: dict[str, int] = {}  # request id -> its input line, for requests that fail in a step
    start = time.perf_counter()
    with open(output_path, "a", encoding="utf-8") as out, \
            tqdm(total=len(items), unit="req", desc="batch", disable=not progress, file=log) as bar:
        in_flight = 0
        while items or in_flight:
            while items and in_flight < max_pending:
                item = items.popleft()
                lines[item.request_id] = item.line_number
                in_flight += _submit(engine, tokenizer, item, summary, log)
            engine.step()
            failed = engine.pop_failures()
            for output in engine.pop_finished():
                in_flight -= 1
                if output.request_id in failed:  # not written: a later run retries it
                    _bad(summary, log, lines[output.request_id], str(failed[output.request_id]))
                    bar.update(1)
                    continue
                out.write(result_line(output, output.request_id))
                out.flush()
                _count(summary, output)
                bar.set_postfix_str(_postfix(summary, time.perf_counter() - start), refresh=False)
                bar.update(1)
    summary.seconds = time.perf_counter() - start
    print(summary.describe(), file=log)
    return summary


def _submit(engine: Engine, tokenizer, item: BatchItem, summary: BatchSummary, log) -> int:
    try:
        tokens = to_token_ids(item.prompt, tokenizer)
        engine.add_request(item.request_id, tokens, item.sampling)
        return 1
    except ValueError as error:  # a prompt the chat template rejects, RequestRejected, ...
        _bad(summary, log, item.line_number, str(error))
        return 0


def _count(summary: BatchSummary, output) -> None:
    summary.completed += 1
    summary.prompt_tokens += output.num_prompt_tokens
    summary.cached_tokens += output.num_cached_tokens
    summary.output_tokens += sum(len(c.token_ids) for c in output.outputs)


def _postfix(summary: BatchSummary, seconds: float) -> str:
    return f"{summary.output_tokens / max(seconds, 1e-9):.1f} tok/s, cache hit {summary.cache_hit_rate:.0%}"


def _bad(summary: BatchSummary, log, line_number: int, reason: str) -> None:
    summary.bad_lines.append((line_number, reason))
    print(f"line {line_number}: skipped: {reason}", file=log)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trellis_jax.batch", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="requests JSONL")
    p.add_argument("--output", required=True, help="results JSONL (appended to; ids already there are skipped)")
    p.add_argument("--model", default=None, help="GGUF file, HF dir, orbax dir or preset (default: SmolLM2-135M)")
    p.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="model dtype; auto (default): bfloat16 where this machine computes it natively (GPUs, "
                        "CPUs with AVX512_BF16: ~1.7x float32's speed), else float32")
    p.add_argument("--disable-radix-cache", action="store_true")
    p.add_argument("--eviction-policy", default="lru")
    p.add_argument("--schedule-policy", default="lpm")
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--kv-memory", default=None, help='KV pool budget, e.g. "1GiB" (default: the runner\'s)')
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="dtype of the KV pages (auto: the model's); bfloat16 halves KV memory and decode reads")
    p.add_argument("--max-num-seqs", type=int, default=32)
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=256, help="default max_tokens for lines without one")
    p.add_argument("--temperature", type=float, default=1.0, help="default temperature for lines without one")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from trellis_jax.engine.builder import build_engine

    config = engine_config(args)
    engine, tokenizer = build_engine(config)
    run_batch(engine, tokenizer, args.input, args.output,
              default_sampling=SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature),
              progress=not args.no_progress)
    return 0


def engine_config(args: argparse.Namespace):
    """The EngineConfig the command line asks for."""
    from trellis_jax.engine.config import EngineConfig

    return EngineConfig(
        model=args.model, dtype=args.dtype, page_size=args.page_size, kv_memory=args.kv_memory,
        kv_cache_dtype=None if args.kv_cache_dtype == "auto" else args.kv_cache_dtype, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
        eviction_policy=args.eviction_policy, schedule_policy=args.schedule_policy,
        disable_radix_cache=args.disable_radix_cache, deterministic=args.deterministic)


if __name__ == "__main__":
    sys.exit(main())
