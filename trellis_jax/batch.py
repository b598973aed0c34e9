"""Offline batch job: `trellis-batch --input requests.jsonl --output results.jsonl` (or `python -m trellis_jax.batch`).

Line formats: trellis_jax/engine/batch_io.py. Runs every request through one Engine (continuous
batching over the radix cache), writing each result as soon as it finishes, so an interrupted job
resumes where it stopped (ids already in the output are skipped). No input line can stop the job: a
line that cannot run (not UTF-8, not JSON, invalid text, wrong types, too long, a prompt that can never
fit, or a request a step could not run: engine.RequestFailed, the others run on) gets an error record in the output and a note with its line number on stderr, and every good line
still runs; rerunning a finished job is a no-op. A progress bar shows requests, tokens/s and the cache
hit rate; a summary is printed at the end (requests, tokens, throughput, prefill tokens skipped thanks
to the cache).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from tqdm.auto import tqdm

from trellis_jax.cli import new_parser
from trellis_jax.engine import flags
from trellis_jax.engine.batch_io import (
    MAX_LINE_BYTES,
    BatchItem,
    DoneInOutput,
    LineError,
    error_line,
    read_done,
    read_items,
    result_line,
)
from trellis_jax.engine.engine import Engine
from trellis_jax.engine.flags import add_engine_flags, parse_engine_args
from trellis_jax.engine.multihost_flags import Job
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
        return (
            f"{self.completed} requests done, {self.skipped_done} already in the output, "
            f"{len(self.bad_lines)} bad lines (error records written); {self.prompt_tokens} prompt tokens "
            f"({self.cached_tokens} = {self.cache_hit_rate:.1%} skipped thanks to the cache), "
            f"{self.output_tokens} generated in {self.seconds:.1f} s: {self.output_tokens / max(self.seconds, 1e-9):.1f} "
            f"generated tok/s, {rate:.1f} computed tok/s"
        )


class _Report:
    """Writes results and error records to the output (flushed one by one) and keeps the summary."""

    def __init__(self, out: TextIO, summary: BatchSummary, log: TextIO):
        self.out, self.summary, self.log = out, summary, log

    def failed(self, error: LineError) -> None:
        self.out.write(error_line(error))
        self.out.flush()
        self.summary.bad_lines.append((error.line_number, error.message))
        print(f"line {error.line_number}: skipped: {error.message}", file=self.log)

    def finished(self, item: BatchItem, output) -> None:
        self.out.write(result_line(output, item.request_id))
        self.out.flush()
        summary = self.summary
        summary.completed += 1
        summary.prompt_tokens += output.num_prompt_tokens
        summary.cached_tokens += output.num_cached_tokens
        summary.output_tokens += sum(len(c.token_ids) for c in output.outputs)


def run_batch(
    engine: Engine,
    tokenizer,
    input_path: str,
    output_path: str,
    *,
    default_sampling: SamplingParams = SamplingParams(max_tokens=256),
    max_pending: int = 1024,
    max_line_bytes: int = MAX_LINE_BYTES,
    progress: bool = True,
    log=sys.stderr,
) -> BatchSummary:
    summary = BatchSummary()
    done = read_done(output_path)
    with open(output_path, "a", encoding="utf-8") as out:
        report = _Report(out, summary, log)
        entries = read_items(input_path, default_sampling, max_line_bytes=max_line_bytes)
        items = _items_to_run(entries, done, report)
        start = time.perf_counter()
        with tqdm(total=len(items), unit="req", desc="batch", disable=not progress, file=log) as bar:
            _run_items(engine, tokenizer, items, report, max_pending, lambda: _progress(bar, summary, start))
    summary.seconds = time.perf_counter() - start
    print(summary.describe(), file=log)
    return summary


def _items_to_run(entries: Iterable[BatchItem | LineError], done: DoneInOutput, report: _Report) -> deque[BatchItem]:
    """The lines still to run; bad lines get their error record now, lines already done are skipped."""
    items: deque[BatchItem] = deque()
    first_line: dict[str, int] = {}
    for entry in entries:
        if entry.line_sha256 in done.failed_lines:
            report.summary.skipped_done += 1
        elif isinstance(entry, LineError):
            report.failed(entry)
        elif entry.key in first_line:
            report.failed(
                LineError(
                    entry.line_number,
                    entry.request_id,
                    f"duplicate id {entry.request_id!r} (first on line {first_line[entry.key]})",
                    entry.line_sha256,
                )
            )
        else:
            first_line[entry.key] = entry.line_number
            if entry.key in done.result_keys:
                report.summary.skipped_done += 1
            else:
                items.append(entry)
    return items


def _run_items(
    engine: Engine, tokenizer, items: deque[BatchItem], report: _Report, max_pending: int, on_finished
) -> None:
    in_flight: dict[str, BatchItem] = {}
    while items or in_flight:
        while items and len(in_flight) < max_pending:
            item = items.popleft()
            if _submit(engine, tokenizer, item, report):
                in_flight[item.key] = item
            else:
                on_finished()  # an error record: the line is done
        if not in_flight:
            continue
        engine.step()
        failed = engine.pop_failures()  # requests a step could not run (engine.RequestFailed); the rest ran on
        for output in engine.pop_finished():
            item = in_flight.pop(output.request_id)
            if output.request_id in failed:
                report.failed(_line_error(item, failed[output.request_id]))
            else:
                report.finished(item, output)
            on_finished()


def _submit(engine: Engine, tokenizer, item: BatchItem, report: _Report) -> bool:
    """Queues one line's request; a line the tokenizer, the chat template or the engine refuses gets an
    error record instead (False)."""
    try:
        tokens = to_token_ids(item.prompt, tokenizer)
        engine.add_request(item.key, tokens, item.sampling)
        return True
    except (ValueError, TypeError, KeyError) as error:  # ChatTemplateError, TokenizerError, too long, ...
        report.failed(_line_error(item, error))
        return False


def _line_error(item: BatchItem, error: Exception) -> LineError:
    """The error record of a line the engine refused or could not run (the engine names the line's key, a
    JSON spelling of its id; the record names the id as the line gave it)."""
    message = str(error).replace(repr(item.key), repr(item.request_id))
    return LineError(item.line_number, item.request_id, message, item.line_sha256)


def _progress(bar, summary: BatchSummary, start: float) -> None:
    seconds = time.perf_counter() - start
    bar.set_postfix_str(
        f"{summary.output_tokens / max(seconds, 1e-9):.1f} tok/s, cache hit {summary.cache_hit_rate:.0%}", refresh=False
    )
    bar.update(1)


def build_parser() -> argparse.ArgumentParser:
    p = new_parser("trellis-batch", __doc__.split("\n\n")[0])
    job = p.add_argument_group("job")
    job.add_argument("--input", required=True, help="requests JSONL (required)")
    job.add_argument(
        "--output", required=True, help="results JSONL, appended to; ids already there are skipped (required)"
    )
    job.add_argument("--max-tokens", type=int, default=256, help="max_tokens for lines without one")
    job.add_argument("--temperature", type=float, default=1.0, help="temperature for lines without one")
    job.add_argument(
        "--max-line-bytes",
        type=int,
        default=MAX_LINE_BYTES,
        help="longer input lines get an error record instead of being read",
    )
    job.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_flags(p)
    return p


def parse_args(argv=None) -> argparse.Namespace:
    return parse_engine_args(build_parser(), argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from trellis_jax.engine.builder import build_engine

    config = engine_config(args)
    job = Job.from_args(args, os.environ)  # None: one process (multihost_flags.py)
    if job is None:
        engine, tokenizer = build_engine(config)
    else:
        job.join(config)
        if not job.is_leader:
            return job.run_follower(config)  # no input or output: the leader's plans only
        engine, tokenizer = job.build_leader_engine(config)
    try:
        run_batch(
            engine,
            tokenizer,
            args.input,
            args.output,
            default_sampling=SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature),
            max_line_bytes=args.max_line_bytes,
            progress=not args.no_progress,
        )
    except RuntimeError as error:
        if job is None:
            raise
        print(f"trellis-batch: the job stopped: {type(error).__name__}: {error}", file=sys.stderr)
        return 1  # results so far are in the output: a rerun resumes there
    finally:
        engine.close()  # a --kv-cache-dir keeps the job's cached prefixes for the next run
        if job is not None:
            job.close()
    return 0


def engine_config(args: argparse.Namespace):
    """The EngineConfig the command line asks for."""
    return flags.engine_config(args)


if __name__ == "__main__":
    sys.exit(main())
