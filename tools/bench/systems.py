"""The systems the harness knows, how to build each one, and which of them this machine can run.

`SYSTEMS` maps a system name to (what it needs importable, a builder taking the settings dict). The
settings are plain data (paths, thread count, Trellis options, ports) so they cross into worker
processes. `missing(name)` returns why a system cannot run here (a module that does not import, or a
file that is absent) or None; the harness prints one line per skipped system and goes on.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# name -> modules that must be importable
REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "trellis": ("trellis_jax.engine.api",),
    "trellis-nocache": ("trellis_jax.engine.api",),
    "trellis-f32": ("trellis_jax.engine.api",),
    "trellis-bf16": ("trellis_jax.engine.api",),
    "trellis-http": ("trellis_jax.serve", "httpx"),
    "hf": ("torch", "transformers"),
    "hf-reuse": ("torch", "transformers"),
    "llama.cpp-Q4_1": ("llama_cpp",),
    "llama.cpp-Q4_1-ramcache": ("llama_cpp",),
    "llama.cpp-F32": ("llama_cpp",),
    "llama.cpp-F32-ramcache": ("llama_cpp",),
    "llama.cpp-BF16": ("llama_cpp",),
    "llama.cpp-BF16-ramcache": ("llama_cpp",),
    "llama.cpp-http": ("llama_cpp", "httpx", "sse_starlette", "starlette_context", "pydantic_settings"),
}
SYSTEMS = tuple(REQUIREMENTS)
# Trellis systems that pin the model dtype, with float weights (a quantized GGUF dequantized to that dtype);
# "trellis" and "trellis-nocache" take the engine's defaults (dtype and weight_format "auto").
PINNED_DTYPES = {"trellis-f32": "float32", "trellis-bf16": "bfloat16"}


def missing(name: str) -> str | None:
    if name not in REQUIREMENTS:
        raise ValueError(f"unknown system {name!r}; known: {', '.join(SYSTEMS)}")
    for module in REQUIREMENTS[name]:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"python module {module!r} is not installed"
    return None


def build(name: str, settings: dict):
    """The runner for `name` (imports happen here, inside the worker process).

    settings: gguf_q4 / gguf_f32 / gguf_bf16 (paths), threads, n_ctx, log_dir, ports, trellis_model (what Trellis
    loads; default gguf_q4), trellis_options, trellis_server_args, and optionally hf_model
    ({"dir": path, "dtype": "bfloat16", "device": "cuda"}; default: dequantized from gguf_q4 on CPU).
    """
    from .runners import hf, llamacpp, trellis

    q4 = Path(settings["gguf_q4"]) if settings.get("gguf_q4") else None
    threads = settings.get("threads")
    trellis_model = settings.get("trellis_model") or q4
    if name in ("trellis", "trellis-nocache"):
        return trellis.TrellisRunner(trellis_model, cache=name == "trellis", options=settings["trellis_options"])
    if name in PINNED_DTYPES:
        # Float weights too: the engine's "auto" keeps a quantized GGUF packed, which the name would not say.
        options = {**settings["trellis_options"], "dtype": PINNED_DTYPES[name], "weight_format": "float"}
        return trellis.TrellisRunner(trellis_model, cache=True, name=name, options=options)
    if name == "trellis-http":
        return trellis.trellis_http_runner(
            trellis_model,
            cache=True,
            port=settings["ports"]["trellis-http"],
            server_args=settings["trellis_server_args"],
            log_dir=settings["log_dir"],
        )
    if name in ("hf", "hf-reuse"):
        spec = settings.get("hf_model")
        loader = hf.dir_model_loader(**spec) if spec else hf.gguf_model_loader(q4)
        return hf.HFRunner(loader, reuse=name == "hf-reuse", threads=threads, device=(spec or {}).get("device", "cpu"))
    if name.startswith("llama.cpp-") and name != "llama.cpp-http":
        path = Path(settings["gguf_f32"]) if "-F32" in name else Path(settings["gguf_bf16"]) if "-BF16" in name else q4
        return llamacpp.LlamaCppRunner(
            path, ram_cache=name.endswith("-ramcache"), threads=threads, n_ctx=settings["n_ctx"]
        )
    if name == "llama.cpp-http":
        return llama_server_runner(Path(settings["gguf_f32"]), settings)
    raise ValueError(f"unknown system {name!r}")


def llama_server_runner(gguf_path: Path, settings: dict):
    from .runners.openai_http import OpenAIHTTPRunner, ServerProcess, python_module_command

    port = settings["ports"]["llama.cpp-http"]
    command = python_module_command(
        "llama_cpp.server",
        "--model",
        str(gguf_path),
        "--port",
        str(port),
        "--n_ctx",
        str(settings["n_ctx"]),
        "--n_threads",
        str(settings["threads"]),
        "--n_threads_batch",
        str(settings["threads"]),
        "--interrupt_requests",
        "False",
    )
    server = ServerProcess(command, port, Path(settings["log_dir"]) / f"llama-server-{port}.log")
    ban = {str(t): -100 for t in (0, 1, 2)}
    return OpenAIHTTPRunner(
        server,
        name="llama.cpp-http",
        description="llama_cpp.server (F32 GGUF) over HTTP, prefix reuse of the previous prompt",
        extra_body={"logit_bias": ban},
    )
