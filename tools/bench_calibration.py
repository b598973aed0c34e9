"""What the matmul op's calibration (pallas_kernels/matmul/calibrate.py) measures and costs on this machine,
on a first start: each shape class's time per backend, the backend chosen, and the seconds spent; and the
`auto` dtype's float32 / bfloat16 measurement.

    python tools/bench_calibration.py [--model SPEC] [--weight-formats float packed] [--json out.json]

Every measurement runs against an empty store (a temporary directory), as a machine's first start does.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

from pallas_kernels.matmul import api, calibrate, choices
from trellis_jax.checkpoints import load_model


def model_calibration(model) -> dict:
    """Prepare the model's weights as a runner does (layouts, then calibration), timed."""
    choices.clear()
    start = time.perf_counter()
    api.prepare(model.params, model.config)
    return {**calibrate.last_report(), "prepare_seconds": time.perf_counter() - start}


def dtype_calibration() -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    chosen = calibrate.prefers_bfloat16()
    cpu = time.process_time() - cpu
    (stored,) = pathlib.Path(os.environ["TRELLIS_CALIBRATION_DIR"]).glob("*.json")
    record = json.loads(stored.read_text())
    return {"bfloat16": chosen, "seconds": time.perf_counter() - start, "cpu_seconds": cpu, "record": record}


def markdown(name: str, report: dict) -> str:
    lines = [
        f"{name}: calibration {report['seconds']:.2f} s wall, {report['cpu_seconds']:.2f} s process CPU "
        f"(prepare in all {report['prepare_seconds']:.2f} s)",
        "",
        "| group | row class (rows timed) | native ms | xla ms | chosen |",
        "|---|---|---|---|---|",
    ]
    rows = {class_name: timed for class_name, _, timed in choices.ROW_CLASSES}
    for group, classes in report["timings"].items():
        for row_class, by_backend in classes.items():
            chosen = min(by_backend, key=by_backend.get)
            cells = " | ".join(f"{1000 * by_backend[b]:.2f}" for b in ("native", "xla"))
            lines.append(f"| {group} | {row_class} ({rows[row_class]}) | {cells} | {chosen} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--weight-formats", nargs="+", default=["float", "packed"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    os.environ["TRELLIS_CALIBRATION"] = "on"
    results = {"loadavg_start": os.getloadavg()[0]}
    for fmt in args.weight_formats:
        model = load_model(args.model, dtype="float32", weight_format=fmt)
        with tempfile.TemporaryDirectory() as where:
            os.environ["TRELLIS_CALIBRATION_DIR"] = where
            results[fmt] = model_calibration(model)
        print(markdown(f"{fmt} weights", results[fmt]) + "\n")
    with tempfile.TemporaryDirectory() as where:
        os.environ["TRELLIS_CALIBRATION_DIR"] = where
        results["dtype"] = dtype_calibration()
    record = results["dtype"]["record"]
    print(
        f"auto dtype: {'bfloat16' if results['dtype']['bfloat16'] else 'float32'} in "
        f"{results['dtype']['seconds']:.2f} s wall, {results['dtype']['cpu_seconds']:.2f} s CPU; bfloat16 / float32 time {record['ratio']:.2f}; "
        f"float32 ms { ({k: round(1000 * v, 2) for k, v in record['float32'].items()}) }, "
        f"bfloat16 ms { ({k: round(1000 * v, 2) for k, v in record['bfloat16_s'].items()}) }"
    )
    results["loadavg_end"] = os.getloadavg()[0]
    print(f"load average {results['loadavg_start']:.1f} -> {results['loadavg_end']:.1f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2, default=str)


if __name__ == "__main__":
    main()
