#!/usr/bin/env bash
# Set up a fresh virtual environment (.venv) and run the main job: the hardware-aware
# multi-trial SPOS search (offline, on the built-in predictors).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[all]'
export MPLBACKEND=Agg
python examples/multi_trial_spos.py "$@"
