"""How far `--quantization int8|int4` moves a float model: per-tensor error and end-to-end logits.

    python tools/quantization_error.py [--models tiny_llama tiny_mistral tiny_qwen2 default random]
                                       [--schemes int8 int4] [--json out.json]

For each float model and scheme (checkpoints/quantize.py, the code `--quantization` runs; int4-head4: int4
with the embedding / LM head in int4 too, which --quantization int4 keeps in int8):
  tensors: the relative RMS error ||dequantized - W|| / ||W|| of every layer's matrix, the embedding and a
    separate LM head; the median and the worst over them;
  logits, teacher-forced on one text (TEXT, 200-odd tokens; random ids for the random model): at every
    position the float and the quantized model's next-token logits given the same prefix. top-1: how often
    both pick the same greedy token; |dlogit|: mean absolute logit difference; KL: mean KL(float || quant)
    in nats; ppl: the text's perplexity under each model (the float one's beside it).
Models: the tiny Hugging Face fixtures (float32 safetensors with random weights, tests/fixtures), `default`:
the default GGUF (Q4_1 layers, Q8_0 embedding) dequantized to float32 then quantized again, and `random`:
random normal weights (init_params, scale 0.02) at the default model's shape.
Logits at every position cost one prefill and one step: the prefill writes the text's KV; then row p of a
second step is token p over the first p cached tokens (each row rewrites its own token's KV, the same values).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from trellis_jax.checkpoints import LoadedModel, load_model
from trellis_jax.checkpoints.quantize import quantize_loaded
from trellis_jax.model import build_step_inputs, init_kv_pages, init_params, jit_forward, quantized

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
PAGE = 16
TEXT = (
    "The history of the bicycle begins in the early nineteenth century, when inventors in Europe tried to build "
    "a machine that a person could ride without a horse. The first designs had no pedals: riders pushed the "
    "ground with their feet. Later, cranks were attached to the front wheel, and the wheel grew larger so that "
    "each turn of the pedals carried the rider further. These tall machines were fast but dangerous, and many "
    "riders fell. The safety bicycle, with two wheels of the same size and a chain that drove the rear wheel, "
    "solved the problem. Air-filled tyres made the ride smoother, and within a few years millions of people "
    "could travel to work, visit friends in the next town, or explore the countryside on their own. Today the "
    "bicycle is still one of the most efficient ways to turn human energy into motion."
)


def float_model(name: str) -> LoadedModel:
    if name == "default":  # its file's Q4_1 / Q8_0 weights dequantized: a float model to quantize again
        return load_model(dtype="float32", weight_format="float")
    if name == "random":
        base = load_model(dtype="float32", weight_format="float")
        return LoadedModel(base.config, init_params(base.config, jax.random.key(0)), base.tokenizer, "random")
    return load_model(str(FIXTURES / name), dtype="float32")


def text_ids(loaded: LoadedModel, name: str) -> list[int]:
    if name == "random":
        return list(np.random.default_rng(0).integers(0, loaded.config.vocab_size, 256))
    return loaded.tokenizer.encode(TEXT)


def all_position_logits(loaded: LoadedModel, ids: list[int]) -> np.ndarray:
    """[N, V] float32: row p the logits after ids[: p + 1]; see the module docstring."""
    n, config = len(ids), loaded.config
    table = list(range(1, 1 + -(-n // PAGE)))
    kv = init_kv_pages(config, 1 + len(table), PAGE)
    prefill = build_step_inputs([ids], [0], [table], PAGE)
    _, kv = jit_forward(loaded.params, kv, prefill, config=config)
    rows = build_step_inputs([[t] for t in ids], list(range(n)), [table] * n, PAGE)
    logits, _ = jit_forward(loaded.params, kv, rows, config=config)
    return np.asarray(logits, np.float32)[:n]


def tensor_errors(floats: dict, packed: dict) -> list[float]:
    """Relative RMS error of every packed matrix (each layer apart) against its float value."""
    errors = []
    pairs = [(floats["layers"][k], w) for k, w in packed["layers"].items() if quantized.is_quantized(w)]
    pairs.append((np.asarray(floats["embed"]).T, packed["embed"]))
    if "lm_head" in packed:
        pairs.append((floats["lm_head"], packed["lm_head"]))
    for dense, w in pairs:
        deq = np.swapaxes(quantized.dequantize_numpy(jax.tree.map(np.asarray, w)), -1, -2)
        dense = np.asarray(dense, np.float32).reshape(-1, *deq.shape[-2:])
        for exact, approx in zip(dense, deq.reshape(dense.shape)):
            errors.append(float(np.sqrt(np.mean((approx - exact) ** 2) / np.mean(exact**2))))
    return errors


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def perplexity(logits, ids) -> float:
    logp = log_softmax(logits[:-1])
    return float(np.exp(-np.mean(logp[np.arange(len(ids) - 1), ids[1:]])))


SCHEMES = {"int8": ("int8", "int8"), "int4": ("int4", "int8"), "int4-head4": ("int4", "int4")}  # layers, head


def compare(name: str, schemes) -> dict:
    base = float_model(name)
    ids = text_ids(base, name)
    reference = all_position_logits(base, ids)
    out = {"tokens": len(ids), "ppl_float": perplexity(reference, ids)}
    for scheme in schemes:
        layers, head = SCHEMES[scheme]
        model = quantize_loaded(base, layers, head_scheme=head)
        logits = all_position_logits(model, ids)
        errors = tensor_errors(base.params, model.params)
        p, q = log_softmax(reference), log_softmax(logits)
        out[scheme] = {
            "tensor_rel_rms_median": float(np.median(errors)),
            "tensor_rel_rms_max": float(np.max(errors)),
            "top1_agreement": float(np.mean(reference.argmax(-1) == logits.argmax(-1))),
            "mean_abs_logit_diff": float(np.mean(np.abs(logits - reference))),
            "mean_abs_logit": float(np.mean(np.abs(reference))),
            "kl": float(np.mean(np.sum(np.exp(p) * (p - q), axis=-1))),
            "ppl": perplexity(logits, ids),
        }
    return out


def markdown(results: dict) -> str:
    lines = [
        "| model | scheme | tensor rel. RMS (median / max) | top-1 agree | mean abs dlogit (mean abs logit) | KL | ppl (float) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for scheme, s in r.items():
            if isinstance(s, dict):
                lines.append(
                    f"| {name} | {scheme} | {s['tensor_rel_rms_median']:.4f} / {s['tensor_rel_rms_max']:.4f} | "
                    f"{s['top1_agreement']:.3f} ({r['tokens']} positions) | {s['mean_abs_logit_diff']:.4f} "
                    f"({s['mean_abs_logit']:.2f}) | {s['kl']:.5f} | {s['ppl']:.2f} ({r['ppl_float']:.2f}) |"
                )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["tiny_llama", "tiny_mistral", "tiny_qwen2", "default", "random"]
    )
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    results = {name: compare(name, args.schemes) for name in args.models}
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
