#!/usr/bin/env bash
# The GPU check in one call: the CUDA tests, then every CUDA path timed (benchmarks/gpu_check.py).
#   benchmarks/gpu_check.sh [--cpu-smoke] [--out FILE] [--skip grid,...]
# On a GPU machine it needs only the working tree and the Python packages; --cpu-smoke
# runs the same at CI sizes on the CPU (the test suite does, so the script cannot rot).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3

echo "## CUDA tests (skipped without a CUDA device)"
"$PY" -m pytest -q -m cuda -p no:cacheprovider tests/unit
tests=$?
echo "## timings"
timings=0
"$PY" benchmarks/gpu_check.py "$@" || timings=$?
# pytest's 5 is "no test collected": not a failure here.
if [ "$tests" -ne 0 ] && [ "$tests" -ne 5 ]; then exit "$tests"; fi
exit "$timings"
