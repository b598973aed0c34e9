"""Router package: a separate process in front of several Trellis servers (replicas) that sends each request
to the replica most likely to hold its prefix in cache.

Owns the routing key of a request (tenant namespace + token ids or characters: `keys.py`), an approximate
prefix index per worker of the prompts routed to it (`prefix_index.py`), the routing policies
(`policy.py`), worker membership and health (`workers.py`), a small HTTP/1.1 client for the upstream calls
(`upstream.py`), the proxy with retries (`proxy.py`), its metrics (`metrics.py`), the ASGI app (`app.py`)
and the command line (`__main__.py`).

May import the tokenizer (to key prompts by the servers' token ids) and the shared CLI helpers; never the
engine, the server, the runner, the model or jax: it runs beside servers, not inside one.
Lifecycle: `python -m trellis_jax.router --worker URL ...` builds the app, starts the health checks at
start-up and stops them at shutdown; the prefix index lives in memory only (a restart starts cold).
"""
