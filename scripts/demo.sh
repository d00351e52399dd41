#!/usr/bin/env bash
# Set up a fresh virtual environment (.venv) and run the main job: the hardware-aware
# multi-trial SPOS search (offline, on the built-in predictors).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_venv.sh all
python examples/multi_trial_spos.py "$@"
