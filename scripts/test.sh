#!/usr/bin/env bash
# Set up a fresh virtual environment (.venv) and run the test suite.
# The tests run on one pytest-xdist worker per core this process may use (nproc honours
# taskset and cgroup limits); PYTEST_WORKERS=N sets the number (0 or 1: in this process).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup_venv.sh all,test
workers=${PYTEST_WORKERS:-$(nproc)}
if [ "$workers" -gt 1 ]; then
    # One torch thread per worker: the workers already fill the cores, and batch-1 tracing
    # gains nothing from more threads on a loaded core.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    # loadgroup: tests marked xdist_group("ray-cluster") share one worker (one Ray cluster).
    set -- -n "$workers" --dist loadgroup "$@"
fi
python -m pytest -q -p no:cacheprovider "$@"
