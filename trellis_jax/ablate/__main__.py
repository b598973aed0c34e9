"""Entry point of ``python -m trellis_jax.ablate`` (see ``cli.py``)."""

import sys

from trellis_jax.ablate.cli import main

sys.exit(main())
