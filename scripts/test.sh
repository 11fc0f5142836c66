#!/usr/bin/env bash
# The test command: sets up .venv (scripts/setup.sh) on a fresh machine, then runs the suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k filter
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
