"""Import directions between packages: DESIGN.md's layering as a table, checked against every module's imports.

Each module of trellis_jax and pallas_kernels is parsed (ast), imports inside functions included, so a new
upward import fails here before it leaks a layer into another at run time. A subprocess then checks what
importing the runner really loads.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import tomllib
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRODUCT = ("trellis_jax", "pallas_kernels")
NOT_PRODUCT = ("tests", "tools", "trellis_testing")  # in the repository, never imported by the product
EAGER, LAZY = "eager", "lazy"  # LAZY: only inside a function, so importing the package does not load it

# package -> {package it may import: EAGER | LAZY}; anything not listed is forbidden. A package is a
# subpackage or top-level module of trellis_jax, or pallas_kernels as a whole.
ALLOWED: dict[str, dict[str, str]] = {
    "pallas_kernels": {},
    # Exception: the root __init__ offers `from trellis_jax import LLM, SamplingParams`, loaded lazily (a module
    # __getattr__), so `import trellis_jax` stays light and loads no layer.
    "trellis_jax": {"trellis_jax.engine": LAZY},
    # What every command line shares (--version, defaults in --help, --model/--dtype): the dtype names only.
    "trellis_jax.cli": {"trellis_jax.dtypes": EAGER},
    "trellis_jax.step_plan": {},  # the scheduler -> runner contract, shared by both sides
    "trellis_jax.field_ranges": {},  # each request field's range, from the wire dtypes (numpy only): engine, runner, serve
    "trellis_jax.sizes": {},  # "512MiB" -> bytes: the engine's memory options and the disk caches' caps
    "trellis_jax.disk_lru": {"trellis_jax.sizes": EAGER},  # the on-disk caches' size cap (checkpoints, runner)
    "trellis_jax.http_server": {},  # uvicorn launch and SIGTERM handling: the server's and the router's
    "trellis_jax.layer_unroll": {},  # the --unroll-layers spellings (stdlib only): engine config, runner, model
    "trellis_jax.cache": {},
    "trellis_jax.kvstore": {},  # the pages below the device pool: host Python + numpy, no jax
    "trellis_jax.tokenizer": {},
    "trellis_jax.scheduler": {"trellis_jax.cache": EAGER, "trellis_jax.step_plan": EAGER},
    "trellis_jax.model": {"pallas_kernels": EAGER, "trellis_jax.layer_unroll": EAGER},
    # Exception: a config helper beside the layers. "auto" is bfloat16 where the native bf16 kernel runs, so it
    # asks pallas_kernels, lazily: the CLIs import it for their --dtype choices without loading jax.
    "trellis_jax.dtypes": {"pallas_kernels": LAZY},
    "trellis_jax.runner": {
        "trellis_jax.step_plan": EAGER,
        "trellis_jax.field_ranges": EAGER,
        "trellis_jax.layer_unroll": EAGER,
        "trellis_jax.model": EAGER,
        "trellis_jax.disk_lru": EAGER,
        "pallas_kernels": EAGER,
    },
    "trellis_jax.checkpoints": {
        "trellis_jax.model": EAGER,
        "trellis_jax.tokenizer": EAGER,
        "trellis_jax.dtypes": EAGER,
        "trellis_jax.cli": EAGER,
        "trellis_jax.disk_lru": EAGER,
    },
    # The device side only lazily (builder.py): the engine's API types and the server load without jax.
    "trellis_jax.engine": {
        "trellis_jax.scheduler": EAGER,
        "trellis_jax.kvstore": EAGER,  # the page-store contract (api.py); the stores themselves lazily
        "trellis_jax.cache": EAGER,
        "trellis_jax.step_plan": EAGER,
        "trellis_jax.field_ranges": EAGER,
        "trellis_jax.layer_unroll": EAGER,
        "trellis_jax.tokenizer": EAGER,
        "trellis_jax.dtypes": EAGER,
        "trellis_jax.cli": EAGER,
        "trellis_jax.sizes": EAGER,
        "trellis_jax.runner": LAZY,
        "trellis_jax.checkpoints": LAZY,
        "trellis_jax.model": LAZY,
        "pallas_kernels": LAZY,
    },
    # Exception: the server prices requests with the model's own cost formula (serve/costs.py), lazily.
    "trellis_jax.serve": {
        "trellis_jax.engine": EAGER,
        "trellis_jax.tokenizer": EAGER,
        "trellis_jax.dtypes": EAGER,
        "trellis_jax.field_ranges": EAGER,
        "trellis_jax.cli": EAGER,
        "trellis_jax.model": LAZY,
        "trellis_jax.router": LAZY,  # --data-parallel-size: replicas behind the router, in this process
        "trellis_jax.http_server": EAGER,
    },
    # A separate process in front of several servers: the tokenizer (prompts keyed by the servers' token ids)
    # and the CLI helpers, nothing of the engine or the server.
    "trellis_jax.router": {"trellis_jax.tokenizer": LAZY, "trellis_jax.cli": EAGER, "trellis_jax.http_server": LAZY},
    "trellis_jax.llm": {"trellis_jax.engine": EAGER},
    "trellis_jax.batch": {"trellis_jax.engine": EAGER, "trellis_jax.dtypes": EAGER, "trellis_jax.cli": EAGER},
    "trellis_jax.generate": {
        "trellis_jax.model": EAGER,
        "trellis_jax.runner": LAZY,  # the persistent compile cache, when the flags ask for it
        "trellis_jax.checkpoints": EAGER,
        "trellis_jax.dtypes": EAGER,
        "trellis_jax.cli": EAGER,
    },
    # Simulation mode replays through the production cache and the scheduler's page helpers without jax; the
    # cost formula, text traces and the live comparison with the engine load their layers lazily.
    "trellis_jax.ablate": {
        "trellis_jax.cache": EAGER,
        "trellis_jax.scheduler": EAGER,
        "trellis_jax.model": LAZY,
        "trellis_jax.tokenizer": LAZY,
        "trellis_jax.checkpoints": LAZY,
        "trellis_jax.engine": LAZY,
        "trellis_jax.cli": EAGER,
    },
}
STDLIB_ONLY = (
    "trellis_jax.step_plan",
    "trellis_jax.cache",
    "trellis_jax.scheduler",
    "trellis_jax.disk_lru",
    "trellis_jax.sizes",
    "trellis_jax.layer_unroll",
)  # no jax, no numpy


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    lazy: bool
    line: int


def package_of(module: str) -> str:
    """The table row a dotted module name belongs to (its top-level name outside the product)."""
    parts = module.split(".")
    if parts[0] == "trellis_jax" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import statement of a module's source, relative ones resolved, with whether it sits in a function."""
    tree = ast.parse(source)
    lazy_nodes = {
        id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)
    }
    here = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        lazy = id(node) in lazy_nodes
        if isinstance(node, ast.Import):
            found += [Import(alias.name, lazy, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (
                ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".")
                if node.level
                else node.module
            )
            # `from trellis_jax import step_plan` imports the submodule: name it, not the root.
            names = [f"{base}.{a.name}" for a in node.names] if base == "trellis_jax" else [base]
            found += [Import(name, lazy, node.lineno) for name in names]
    return found


def product_modules() -> list[tuple[pathlib.Path, str, bool]]:
    """(path, dotted module name, is a package __init__) for every product module."""
    out = []
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            out.append((path, ".".join(parts[:-1] if is_package else parts), is_package))
    return out


def all_imports() -> list[tuple[pathlib.Path, str, Import]]:
    return [
        (path, package_of(module), imp)
        for path, module, is_package in product_modules()
        for imp in imports_of(path.read_text(), module, is_package=is_package)
    ]


def test_every_product_package_has_a_row_in_the_table():
    packages = {package_of(module) for _, module, _ in product_modules()}
    assert packages - set(ALLOWED) == set(), "place the new package in ALLOWED (and DESIGN.md's layers)"


def test_every_import_between_packages_follows_the_table():
    bad = []
    for path, package, imp in all_imports():
        target = package_of(imp.module)
        if target == package or (target not in ALLOWED and target not in NOT_PRODUCT):
            continue  # within the package, or the standard library / a third-party package
        how = ALLOWED.get(package, {}).get(target)
        if how is None or (how == LAZY and not imp.lazy):
            where = "inside a function" if imp.lazy else "at import time"
            bad.append(f"{path.relative_to(ROOT)}:{imp.line}: {package} imports {imp.module} {where}")
    assert bad == [], "imports against the layering (tests/test_layering.py ALLOWED):\n" + "\n".join(bad)


def test_the_table_itself_has_no_cycle():
    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(
            dep == goal or (dep not in seen and reaches(dep, goal, seen | {dep})) for dep in ALLOWED.get(start, {})
        )

    cyclic = [package for package in ALLOWED if reaches(package, package, set())]
    assert cyclic == []


def test_host_packages_import_only_the_standard_library_and_each_other():
    bad = [
        f"{path.relative_to(ROOT)}:{imp.line}: {imp.module}"
        for path, package, imp in all_imports()
        if package in STDLIB_ONLY
        and package_of(imp.module) not in ALLOWED
        and imp.module.split(".")[0] not in sys.stdlib_module_names
    ]
    assert bad == []


def test_the_parser_sees_imports_inside_functions_and_resolves_relative_ones():
    source = "from .policy import P\nfrom .. import cache\n\ndef f():\n    from trellis_jax.engine import api\n"
    found = imports_of(source, "trellis_jax.scheduler.x")
    assert found == [
        Import("trellis_jax.scheduler.policy", False, 1),
        Import("trellis_jax.cache", False, 2),
        Import("trellis_jax.engine", True, 5),
    ]


def test_importing_the_runner_loads_no_scheduler_or_cache_module():
    code = (
        "import sys, trellis_jax.runner\n"
        "print(sorted(m for m in sys.modules if m.startswith(('trellis_jax.scheduler', 'trellis_jax.cache'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_package_build_ships_the_product_but_not_the_fakes():
    from setuptools import find_packages

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    shipped = find_packages(str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert {"trellis_jax", "trellis_jax.engine", "pallas_kernels"} <= set(shipped)
    assert [p for p in shipped if p.split(".")[0] not in PRODUCT] == []
