#!/usr/bin/env bash
# Sets up everything the tests need (venv, package, Debian's Prometheus tools), runs the linters that CI holds
# the code to (ruff, mypy: configured in pyproject.toml), then the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k reload
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-tools
.venv/bin/ruff check agent tests
.venv/bin/mypy
# every test, the slow ones too (a bare `pytest` skips them), on every core (pyproject.toml's addopts: -n auto
# --dist loadgroup); property tests try 150 examples each here, 50 in the quick loop (tests/helpers.py)
export KPI_FUZZ_EXAMPLES="${KPI_FUZZ_EXAMPLES:-150}"
# the tests start hundreds of agent processes: with PYTHONDONTWRITEBYTECODE set (some machines set it), each
# would compile every module it imports from source, and pytest would rewrite every test module in each worker;
# with bytecode kept in __pycache__ (git ignores it), as an installed agent has, the whole run costs less
unset PYTHONDONTWRITEBYTECODE
exec .venv/bin/python -m pytest -q -m "slow or not slow" "$@"
