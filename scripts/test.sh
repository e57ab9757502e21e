#!/usr/bin/env bash
# Sets up everything the tests need (venv, package, Debian's Prometheus tools) and runs the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k reload
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-tools
exec .venv/bin/python -m pytest -q "$@"
