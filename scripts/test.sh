#!/usr/bin/env bash
# Set up a fresh virtual environment (.venv) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_venv.sh all,test
python -m pytest -q -p no:cacheprovider "$@"
