"""The engine: joins the scheduler (host), the runner (device) and the tokenizer; offline and async APIs.

Owns request lifecycles from prompt to finished text. May import everything below it (scheduler, cache,
runner, model, checkpoints, tokenizer); imports jax only through the runner, lazily (builder.py), so
the API types load without it. Public API: `trellis_jax.engine.api`. Its test doubles (fake runner,
byte tokenizer) live outside the product package, in `trellis_testing.fakes`.
"""
