"""Engine benchmarks of issue 5, cache on vs off side by side in one run (one process, one runner).

    PYTHONPATH=. .venv/bin/python tools/bench_engine.py            # full sizes (minutes on a 2-core CPU)
    PYTHONPATH=. .venv/bin/python tools/bench_engine.py --quick    # small sizes, a smoke run of the code path

Scenarios (greedy, default model, float32):
  shared   ~1500 shared + ~100 distinct prompt tokens, 32 requests, 32 new tokens; the cache is warmed
           with one request first. Mean TTFT (submit -> first token) and end-to-end output tokens/s.
  multi    multi-turn chats: each turn's prompt = previous prompt + the model's answer + a new user
           turn (token ids kept, as a client holding the conversation would); prefill tokens computed.
  control  no sharing (every prompt starts with its own token): throughput on vs off (best of 2 rounds,
           fresh prompts each round).
  pages    peak KV pages in use (locked + private) with 32 concurrent shared-prefix requests. Page
           accounting does not depend on the model, so this runs the same scheduler + cache over the
           fake runner with a budget large enough that all 32 are admitted at once.
Both engines take turns on one runner: identical compiled programs, identical KV pool.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass

from trellis_jax.engine.api import EngineConfig, SamplingParams
from trellis_jax.engine.builder import build_engine, make_runner

WORDS = (
    "system network cache page token model layer query answer policy store market river mountain "
    "engine kernel memory device batch prefix radix tree value key window budget thread stream "
    "apple orange garden window music history science planet ocean forest signal render"
).split()


@dataclass
class RunResult:
    mean_ttft_s: float
    wall_s: float
    output_tokens: int
    prefill_tokens_computed: int
    peak_pages: int

    @property
    def throughput(self) -> float:
        return self.output_tokens / self.wall_s


def text_tokens(tokenizer, rng: random.Random, count: int) -> list[int]:
    """Exactly `count` token ids of pseudo-English text."""
    ids: list[int] = []
    while len(ids) < count:
        ids += tokenizer.encode(" ".join(rng.choice(WORDS) for _ in range(64)) + ". ", parse_special=False)
    return ids[:count]


def drive(engine, prompts: list[list[int]], params: SamplingParams) -> tuple[RunResult, list]:
    stats = engine.scheduler.stats
    before = stats.num_prefill_tokens_computed
    stats.peak_pages_in_use = 0
    start = time.perf_counter()
    ids = [f"b{i}-{random.random()}" for i in range(len(prompts))]
    for request_id, prompt in zip(ids, prompts):
        engine.add_request(request_id, prompt, params)
    first: dict[str, float] = {}
    while engine.has_unfinished():
        for delta in engine.step():
            if delta.token_ids and delta.request_id not in first:
                first[delta.request_id] = time.perf_counter() - start
    wall = time.perf_counter() - start
    outputs = {o.request_id: o for o in engine.pop_finished()}
    ordered = [outputs[i] for i in ids]
    result = RunResult(
        sum(first.values()) / len(first),
        wall,
        sum(len(o.token_ids) for o in ordered),
        stats.num_prefill_tokens_computed - before,
        stats.peak_pages_in_use,
    )
    return result, ordered


def shared_scenario(engines, tokenizer, args) -> dict:
    rng = random.Random(1)
    shared = text_tokens(tokenizer, rng, args.shared_tokens)
    prompts = [shared + text_tokens(tokenizer, rng, args.distinct_tokens) for _ in range(args.num_requests + 1)]
    params = SamplingParams(temperature=0, max_tokens=args.new_tokens, ignore_eos=True)
    out = {}
    for name, engine in engines.items():
        drive(engine, prompts[:1], SamplingParams(temperature=0, max_tokens=1))  # warm the cache
        out[name], outputs = drive(engine, prompts[1:], params)
        out[name + "_tokens"] = [o.token_ids for o in outputs]
    return out


def multi_turn_scenario(engines, tokenizer, args) -> dict:
    rng = random.Random(2)
    system = text_tokens(tokenizer, rng, 200)
    user_turns = [[text_tokens(tokenizer, rng, 30) for _ in range(args.turns)] for _ in range(args.chats)]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    out = {}
    for name, engine in engines.items():
        prompts = [system + turns[0] for turns in user_turns]
        computed = total = 0
        for turn in range(args.turns):
            result, outputs = drive(engine, prompts, params)
            computed += result.prefill_tokens_computed
            total += sum(len(p) for p in prompts)
            if turn + 1 < args.turns:
                prompts = [p + o.token_ids + turns[turn + 1] for p, o, turns in zip(prompts, outputs, user_turns)]
        out[name] = {"prefill_tokens_computed": computed, "prompt_tokens": total}
    return out


def control_scenario(make_engines, tokenizer, args) -> dict:
    params = SamplingParams(temperature=0, max_tokens=args.new_tokens, ignore_eos=True)
    out = {"on": [], "off": []}
    for round_ in range(2):  # fresh prompts each round: a repeat would hit the cache
        rng = random.Random(30 + round_)
        prompts = [[100 + 40 * round_ + i] + text_tokens(tokenizer, rng, 200) for i in range(args.num_requests)]
        for name, engine in make_engines().items():  # new engines: the other one wrote the runner's pages
            out[name].append(drive(engine, prompts, params)[0].throughput)
    return {name: max(values) for name, values in out.items()}


def pages_scenario(args) -> dict:
    from trellis_testing.fakes import make_fake_engine

    rng = random.Random(4)
    shared = [rng.randrange(1, 250) for _ in range(args.shared_tokens)]
    prompts = [shared + [rng.randrange(1, 250) for _ in range(args.distinct_tokens)] for _ in range(args.num_requests)]
    need = args.num_requests * (-(-(len(prompts[0]) + args.new_tokens) // args.page_size)) + 8
    out = {}
    for name, enabled in (("on", True), ("off", False)):
        engine, *_ = make_fake_engine(
            num_pages=need,
            page_size=args.page_size,
            enable_prefix_cache=enabled,
            max_num_seqs=args.num_requests,
            max_num_batched_tokens=1 << 20,
        )
        result, _ = drive(engine, prompts, SamplingParams(temperature=0, max_tokens=args.new_tokens, ignore_eos=True))
        out[name] = result.peak_pages
    return out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None)
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--shared-tokens", type=int, default=1500)
    p.add_argument("--distinct-tokens", type=int, default=100)
    p.add_argument("--num-requests", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--chats", type=int, default=4)
    p.add_argument("--turns", type=int, default=6)
    p.add_argument("--budget", type=int, default=512, help="max_num_batched_tokens")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--json", default=None, help="also write the numbers here")
    p.add_argument("--scenarios", default="pages,shared,multi,control", help="comma-separated subset to run")
    args = p.parse_args(argv)
    if args.quick:
        args.shared_tokens, args.distinct_tokens, args.num_requests, args.new_tokens = 200, 20, 8, 8
        args.chats, args.turns, args.budget = 2, 3, 256
    return args


def main(argv=None) -> None:
    from trellis_jax.checkpoints import load_model

    args = parse_args(argv)
    loaded = load_model(args.model)
    longest = args.shared_tokens + args.distinct_tokens + args.new_tokens
    pages = args.num_requests * -(-longest // args.page_size) + 64
    base = dict(
        model=args.model,
        page_size=args.page_size,
        num_pages=pages,
        max_num_batched_tokens=args.budget,
        max_num_seqs=args.num_requests,
        max_model_len=max(2048, longest + 64),
        token_buckets=tuple(sorted({args.num_requests, 128, args.budget})),
        seq_buckets=(8, args.num_requests),
    )
    start = time.perf_counter()
    runner = make_runner(EngineConfig(**base), loaded)
    warm_compilations = runner.num_compilations
    print(
        f"warm-up (compile) {time.perf_counter() - start:.1f} s, {warm_compilations} programs; "
        f"KV pool {runner.kv_pool.describe()}"
    )

    def fresh_engines():  # per scenario: an engine may not step again after another wrote the runner's pages
        return {
            name: build_engine(EngineConfig(**base, disable_radix_cache=(name == "off")), loaded, runner)[0]
            for name in ("on", "off")
        }

    tokenizer = loaded.tokenizer
    report = {}
    for name, scenario in (
        ("pages", lambda: pages_scenario(args)),
        ("shared", lambda: shared_scenario(fresh_engines(), tokenizer, args)),
        ("multi", lambda: multi_turn_scenario(fresh_engines(), tokenizer, args)),
        ("control", lambda: control_scenario(fresh_engines, tokenizer, args)),
    ):
        if name not in args.scenarios.split(","):
            continue
        start = time.perf_counter()
        report[name] = scenario()
        shown = {k: v for k, v in report[name].items() if not k.endswith("_tokens")}
        print(f"[{name} done in {time.perf_counter() - start:.0f} s] {shown}", flush=True)
    report["compilations"] = runner.num_compilations - warm_compilations  # after warm-up: should stay 0
    if len(report) == 5:
        print_report(report, args)
    else:
        print(f"compilations after warm-up: {report['compilations']} in all")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, default=lambda o: o.__dict__, indent=1)


def print_report(report: dict, args) -> None:
    s, m, c, p = report["shared"], report["multi"], report["control"], report["pages"]
    on, off = s["on"], s["off"]
    identical = sum(a == b for a, b in zip(s["on_tokens"], s["off_tokens"]))
    rows = [
        (
            "shared: mean TTFT (s)",
            f"{on.mean_ttft_s:.2f}",
            f"{off.mean_ttft_s:.2f}",
            f"{on.mean_ttft_s / off.mean_ttft_s:.3f} (target <= 0.125)",
        ),
        (
            "shared: output tok/s",
            f"{on.throughput:.1f}",
            f"{off.throughput:.1f}",
            f"{on.throughput / off.throughput:.2f}x (target >= 5x)",
        ),
        (
            "shared: peak pages (real run)",
            str(on.peak_pages),
            str(off.peak_pages),
            f"{on.peak_pages / off.peak_pages:.3f}",
        ),
        (
            "multi-turn: prefill tokens computed",
            str(m["on"]["prefill_tokens_computed"]),
            str(m["off"]["prefill_tokens_computed"]),
            f"{m['on']['prefill_tokens_computed'] / m['off']['prefill_tokens_computed']:.3f} (target <= 0.25)",
        ),
        (
            "control: output tok/s (best of 2)",
            f"{c['on']:.1f}",
            f"{c['off']:.1f}",
            f"{c['on'] / c['off']:.3f} (target >= 0.95)",
        ),
        ("pages: peak with all concurrent", str(p["on"]), str(p["off"]), f"{p['on'] / p['off']:.3f} (target <= 0.167)"),
    ]
    print(
        f"\n{args.num_requests} requests, {args.shared_tokens}+{args.distinct_tokens} prompt tokens, "
        f"{args.new_tokens} new; {args.chats} chats x {args.turns} turns; budget {args.budget}"
    )
    print("| metric | cache on | cache off | on/off |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"greedy outputs identical on vs off (shared scenario): {identical}/{len(s['on_tokens'])}; "
        f"compilations after warm-up: {report['compilations']} in all"
    )


if __name__ == "__main__":
    main()
