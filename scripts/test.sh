#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, then pytest against SQLite and a real PostgreSQL on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Data for tests and benchmarks (../shared/datasets beside the clone).
export LLMREC_DATA_DIR=${LLMREC_DATA_DIR:-$(cd .. && pwd)/shared/datasets}
# Keep the user's own store out of the tests.
export LLMREC_DB_URL=${LLMREC_DB_URL:-sqlite:///$(mktemp -d)/llmrec-test.db}
LLMREC_TEST_PG_URL=$(bash scripts/postgres.sh)
export LLMREC_TEST_PG_URL
# Debian's Chromium for the web page test (driven by Playwright).
LLMREC_TEST_CHROMIUM=$(bash scripts/chromium.sh)
export LLMREC_TEST_CHROMIUM
"$VENV/bin/ruff" check src tests benchmarks
"$VENV/bin/ruff" format --check src tests benchmarks
# Types of src/llmrec ([tool.mypy] in pyproject.toml); .mypy_cache makes a rerun take seconds.
"$VENV/bin/mypy" --config-file pyproject.toml
# The 30 slowest tests in the log, and every test's time in out/pytest-junit.xml (what the fast lane is cut by).
mkdir -p out
exec "$VENV/bin/pytest" --durations=30 --junitxml=out/pytest-junit.xml "$@"
