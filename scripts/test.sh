#!/usr/bin/env bash
# Set up a fresh virtual environment (.venv) and run the test suite.
# torch goes in first, from the CPU wheel, so nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q torch==2.13.0
python -m pip install -q -e '.[all,test]'
export MPLBACKEND=Agg
set +e
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
set -e
# pytest's 5 means "no tests collected": a failure for us.
exit $rc
