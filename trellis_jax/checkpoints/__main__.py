"""Convert a checkpoint to an orbax directory that reloads faster than re-dequantizing a GGUF.

    python -m trellis_jax.checkpoints --out DIR [--model GGUF|HF_DIR|PRESET] [--dtype float32|bfloat16]
                                      [--overwrite]

The result is what `load_model(DIR)` and `--model DIR` accept; see orbax_io.py for its layout.
"""

from __future__ import annotations

import sys
import time

from trellis_jax.checkpoints.errors import CheckpointError
from trellis_jax.checkpoints.load import load_model
from trellis_jax.checkpoints.orbax_io import save_orbax
from trellis_jax.cli import new_parser


def main(argv=None) -> int:
    parser = new_parser("python -m trellis_jax.checkpoints", __doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="orbax directory to write (required)")
    parser.add_argument("--model", default=None, help="source checkpoint (default: the default model)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="dtype to save in")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out directory")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        loaded = load_model(args.model, dtype=args.dtype)
        directory = save_orbax(loaded, args.out, overwrite=args.overwrite)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"wrote {directory} ({loaded.config.architecture}, {args.dtype}, from {loaded.source}) "
        f"in {time.perf_counter() - start:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
