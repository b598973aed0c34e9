"""OpenAI-compatible HTTP server over the engine's async API (`python -m trellis_jax.serve`).

Owns HTTP only: request validation (protocol.py), OpenAI error JSON (errors.py), auth and tenant
namespaces (tenancy.py), completions/chat execution and SSE streaming (generation.py, responses.py),
Prometheus metrics (metrics.py), body size and read-time limits (limits.py), the API document and docs
pages (openapi.py), the app (app.py) and the process
(__main__.py, launched by trellis_jax/http_server.py as the router is). Imports the engine (`AsyncEngine` or anything with the same generate/abort/
shutdown/tokenizer surface) and the model's cost formulas; never jax directly.
"""

from trellis_jax.serve.app import ServerSettings, create_app

__all__ = ["ServerSettings", "create_app"]
