"""Do the systems compute the same thing? Greedy output agreement against a reference system.

`agreement(runs, reference="hf")` compares, request by request (same workload, repeat and request id),
the output token ids of every system that returns them with the reference's. Returns
{system: (identical, compared)}; a system with no comparable requests is absent. Greedy float32 runs of
the same weights should agree on (nearly) every request; a low count points at a correctness bug (or
at float ties, which is why this is reported, not asserted).
"""

from __future__ import annotations


def agreement(runs: list[dict], reference: str = "hf") -> dict[str, tuple[int, int]]:
    outputs = {}
    for run in runs:
        for r in run.get("results", []):
            if r.get("output_token_ids"):
                outputs[(run["system"], run["workload"], run["repeat"], r["id"])] = r["output_token_ids"]
    counts: dict[str, list[int]] = {}
    for (system, workload, repeat, rid), ids in outputs.items():
        ref = outputs.get((reference, workload, repeat, rid))
        if system == reference or ref is None:
            continue
        same, total = counts.setdefault(system, [0, 0])
        counts[system] = [same + (ids == ref), total + 1]
    return {system: (same, total) for system, (same, total) in counts.items()}
