"""GPU mode: Trellis vs transformers on a Llama-3.2-1B-shaped model with random weights, bf16.

    python -m tools.bench.gpu [--out results/bench-gpu] [--skip-workloads] [--skip-micro]

Needs only jax (GPU), torch (CUDA), transformers, tokenizers and this repo (no gguf, no downloads):
1. writes the random model once (`random_model.py`) — Trellis and transformers load the same files;
2. micro-benchmarks, each engine in its own process: prefill of one 2048-token prompt (TTFT, ms) and
   decode tokens/s at batch 1 and 32 (256 new tokens each) — the issue's reference figures are
   19.3 ms / 88.6 / 2,826 tok/s for transformers 5.17 eager, targets for Trellis <= 12 ms / >= 800 /
   >= 10,000;
3. the five shared-prefix workloads (preset "gpu") through the same harness as the CPU table, systems
   trellis, trellis-nocache, hf, hf-reuse, one repeat.
Writes micro.json, results.json, report.md and PNGs into --out and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from .requests import BenchRequest

MODES = {
    "h200": dict(
        device="cuda",
        preset="gpu",
        shape=None,
        prefill=2048,
        decode=256,
        batch=32,
        trellis=dict(
            dtype="bfloat16",
            kv_memory="16GiB",
            max_num_seqs=32,
            max_num_batched_tokens=2048,
            max_model_len=8192,  # the agentic trunk is 4096 tokens + a branch
            token_buckets=(32, 64, 256, 2048),
            seq_buckets=(1, 8, 32),
        ),
    ),
    # --tiny: the same code path on CPU with a toy model, to check the script without a GPU.
    "tiny": dict(
        device="cpu",
        preset="tiny",
        prefill=64,
        decode=8,
        batch=4,
        shape=dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            vocab_size=512,
            max_position_embeddings=512,
            rope_theta=10000.0,
            rms_norm_eps=1e-5,
            tie_word_embeddings=True,
            bos_token_id=1,
            eos_token_id=2,
        ),
        trellis=dict(
            dtype="bfloat16",
            kv_memory="16MiB",
            max_num_seqs=4,
            max_num_batched_tokens=64,
            token_buckets=(16, 64),
            seq_buckets=(1, 4),
        ),
    ),
}


def _random_prompt(seed: int, n: int, vocab: int = 500) -> list[int]:
    import random

    rng = random.Random(seed)
    return [rng.randrange(10, vocab) for _ in range(n)]


def _micro_requests(mode: dict):
    prefill = [
        BenchRequest(f"prefill-{i}", "micro", 0, [], 1, prompt_token_ids=_random_prompt(i, mode["prefill"]))
        for i in range(4)
    ]
    batch1 = [BenchRequest("decode-1", "micro", 0, [], mode["decode"] + 1, prompt_token_ids=_random_prompt(99, 16))]
    batch = [
        BenchRequest(f"decode-b{i}", "micro", 0, [], mode["decode"] + 1, prompt_token_ids=_random_prompt(100 + i, 16))
        for i in range(mode["batch"])
    ]
    return prefill, batch1, batch


def _decode_rate(results) -> float:
    """New tokens after the first, per second, between the last first-token and the last finish."""
    tokens = sum(r.num_output_tokens - 1 for r in results)
    return tokens / (max(r.finish_s for r in results) - max(r.first_token_s for r in results))


def micro(system: str, model_dir: Path, compile_cache: Path, mode: dict) -> dict:
    """Prefill latency and decode rates for one system, measured with its runner (first run = warm-up)."""
    from .runners.base import now
    from .runners.hf import HFRunner, dir_model_loader
    from .runners.trellis import TrellisRunner

    if system == "trellis":
        runner = TrellisRunner(
            model_dir, cache=False, options={**mode["trellis"], "compile_cache_dir": str(compile_cache)}
        )
    else:
        runner = HFRunner(dir_model_loader(model_dir, device=mode["device"]), reuse=False, device=mode["device"])
    runner.start()
    prefill, batch1, batch32 = _micro_requests(mode)
    ttfts = []
    for request in prefill:
        t0 = now()
        ttfts.append(runner.run_wave([request], t0)[0].ttft_s)
    # HFRunner serves one request at a time, so its batch-32 figure comes from _hf_batch32 instead.
    waves = {"decode_tok_s_batch1": batch1} | ({"decode_tok_s_batch32": batch32} if system == "trellis" else {})
    rates = {}
    for name, wave in waves.items():
        runner.run_wave(wave, now())  # warm-up of this shape
        rates[name] = _decode_rate(runner.run_wave(wave, now()))
    runner.close()
    ms = sorted(t * 1000 for t in ttfts[1:])
    return {
        "system": system,
        "prefill_tokens": mode["prefill"],
        "prefill_ms_median": ms[len(ms) // 2],
        "prefill_ms_all": ms,
        "decode_new_tokens": mode["decode"],
        "batch": mode["batch"],
        **rates,
    }


def _hf_batch32(model_dir: Path, mode: dict) -> dict:
    """transformers' own batched greedy decode: `batch` prompts of 16 tokens, `decode` new tokens each."""
    import time

    import torch

    from .runners.hf import dir_model_loader

    model = dir_model_loader(model_dir, device=mode["device"])()
    ids = torch.tensor([_random_prompt(100 + i, 16) for i in range(mode["batch"])], device=mode["device"])
    sync = torch.cuda.synchronize if mode["device"] == "cuda" else (lambda: None)
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kwargs)
        sync()
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kwargs)
        sync()
        prefill_s = time.perf_counter() - t
        t = time.perf_counter()
        model.generate(ids, max_new_tokens=mode["decode"] + 1, min_new_tokens=mode["decode"] + 1, **kwargs)
        sync()
        total_s = time.perf_counter() - t
    return {
        "system": "hf-batched",
        "batch": mode["batch"],
        "decode_tok_s_batch32": mode["batch"] * mode["decode"] / (total_s - prefill_s),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("results/bench-gpu"))
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--skip-workloads", action="store_true")
    p.add_argument("--systems", default="trellis,trellis-nocache,hf,hf-reuse")
    p.add_argument("--tiny", action="store_true", help="toy model on CPU: checks the script without a GPU")
    p.add_argument("--micro-only", choices=["trellis", "hf", "hf-batch32"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    mode = MODES["tiny" if args.tiny else "h200"]
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several engines share one GPU
    model_dir = args.out / "model"
    compile_cache = (args.out / "cache" / "jax").resolve()
    if args.micro_only:
        result = (
            _hf_batch32(model_dir, mode)
            if args.micro_only == "hf-batch32"
            else micro(args.micro_only, model_dir, compile_cache, mode)
        )
        print("MICRO " + json.dumps(result), flush=True)
        return 0
    from .random_model import write_random_llama

    write_random_llama(model_dir, shape=mode["shape"], device=mode["device"])
    if not args.skip_micro:
        _run_micro(args.out, ["--tiny"] if args.tiny else [])
    if not args.skip_workloads:
        _run_workloads(args, model_dir, compile_cache, mode)
    return 0


def _run_micro(out: Path, extra: list[str]) -> None:
    results = {}
    for which in ("trellis", "hf", "hf-batch32"):
        proc = subprocess.run(
            [sys.executable, "-m", "tools.bench.gpu", "--out", str(out), "--micro-only", which, *extra],
            capture_output=True,
            text=True,
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("MICRO ")]
        results[which] = json.loads(line[-1][6:]) if line else {"error": proc.stderr[-3000:]}
        print(which, json.dumps(results[which])[:500], flush=True)
    (out / "micro.json").write_text(json.dumps(results, indent=1))


def _run_workloads(args, model_dir: Path, compile_cache: Path, mode: dict) -> None:
    from .__main__ import _report
    from .harness import BenchConfig, run_comparison
    from .tokenizer import BenchTokenizer

    settings = {
        "trellis_model": str(model_dir),
        "trellis_options": {**mode["trellis"], "compile_cache_dir": str(compile_cache)},
        "hf_model": {"dir": str(model_dir), "dtype": "bfloat16", "device": mode["device"]},
        "model_description": "random-weight Llama-3.2-1B-shaped model, bf16, one HF directory"
        if not args.tiny
        else "toy random Llama on CPU (--tiny script check)",
        "log_dir": str(args.out / "logs"),
        "trellis_server_args": [],
        "ports": {},
        "n_ctx": 8192,
    }
    config = BenchConfig(
        out_dir=args.out,
        preset=mode["preset"],
        systems=tuple(args.systems.split(",")),
        repeats=1,
        threads=None,
        settings=settings,
    )
    result = run_comparison(config, BenchTokenizer.load(model_dir))
    micro_path = args.out / "micro.json"
    result["micro"] = json.loads(micro_path.read_text()) if micro_path.is_file() else None
    result["command"] = "python -m tools.bench.gpu " + " ".join(sys.argv[1:])
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str))
    _report(result, args.out, result["command"], update_benchmarks=False)


if __name__ == "__main__":
    sys.exit(main())
