"""The router tests' helpers (router_harness.py) on the import path, as tests/serve does for its harness."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
