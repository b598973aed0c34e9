"""One process of the two-process tensor-parallel test: process 0 leads (engine + scheduler), 1 follows.

    python tests/runner/tp_multiprocess_child.py PROCESS_ID COORDINATOR_PORT LINK_PORT MODEL

Each process has one CPU device; the mesh spans both (TP 2). Process 0 prints one JSON line: the greedy
tokens of tp_child.PROMPTS, generated twice (the second pass reads the radix cache).
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from trellis_jax.runner import multihost  # noqa: E402

SECRET = b"a test secret, 16+ bytes"


def main(process_id: int, coordinator_port: int, link_port: int, model: str) -> None:
    multihost.initialize(f"127.0.0.1:{coordinator_port}", 2, process_id)
    from tp_child import PROMPTS, engine_config

    from trellis_jax.checkpoints import load_model
    from trellis_jax.engine.api import LLM, SamplingParams
    from trellis_jax.engine.builder import build_engine, make_runner

    loaded = load_model(model, dtype="float32", weight_format="float")
    config = engine_config(2)
    runner = make_runner(config, loaded)
    if process_id:
        multihost.follow(runner, multihost.PlanLink.connect("127.0.0.1", link_port, secret=SECRET))
        return
    leader = multihost.LeaderRunner(runner, multihost.PlanLink.listen(link_port, 1, secret=SECRET))
    llm = LLM.from_engine(*build_engine(config, loaded=loaded, runner=leader))
    params = SamplingParams(temperature=0, max_tokens=10)
    tokens = [out.outputs[0].token_ids for _ in range(2) for out in llm.generate(PROMPTS, params)]
    leader.close()
    print(json.dumps(tokens))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
