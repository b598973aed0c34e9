"""Structured outputs on a real model: N varied JSON schemas, does every reply parse and conform?

    python tools/check_structured.py [--model SPEC] [--count 50] [--temperature 0.8] [--max-tokens 256]

Each schema (trellis_testing/schemas.py: nested objects, enums, arrays, required keys; bounded sizes) goes
to the chat template with a prompt asking for JSON, through `LLM.generate` with that schema as
`structured_output`, seed i. Prints the pass rate, the finish reasons and every failure; exits 1 on any.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time

from trellis_jax.engine.api import LLM, SamplingParams, StructuredOutput
from trellis_testing.schema_check import problems
from trellis_testing.schemas import varied_schemas


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    llm = LLM(args.model, max_num_seqs=8, max_num_batched_tokens=256, max_model_len=1024)
    schemas = varied_schemas(args.count, seed=1)
    prompts = [
        [{"role": "user", "content": f"Reply with a JSON document following this schema: {json.dumps(s)}"}]
        for s in schemas
    ]
    params = [
        SamplingParams(
            temperature=args.temperature,
            seed=i,
            max_tokens=args.max_tokens,
            structured_output=StructuredOutput("json_schema", json.dumps(s)),
        )
        for i, s in enumerate(schemas)
    ]
    start = time.perf_counter()
    outputs = llm.generate(prompts, params)
    elapsed = time.perf_counter() - start
    failures, reasons = [], collections.Counter()
    for i, (schema, output) in enumerate(zip(schemas, outputs)):
        text, reason = output.outputs[0].text, output.outputs[0].finish_reason
        reasons[reason] += 1
        try:
            found = problems(json.loads(text), schema)
        except json.JSONDecodeError as error:
            found = [f"does not parse ({error})"]
        if found:
            failures.append((i, reason, text, found))
    passed = args.count - len(failures)
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print(
        f"model={args.model or 'default'} schemas={args.count} temperature={args.temperature}: "
        f"{passed}/{args.count} parse and conform ({100 * passed / args.count:.0f} %); finish reasons "
        f"{dict(reasons)}; {tokens} tokens in {elapsed:.1f} s"
    )
    for i, reason, text, found in failures:
        print(f"  schema {i} ({reason}): {found[:3]} text={text[:200]!r}")
    print("example:", outputs[0].outputs[0].text[:200])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
