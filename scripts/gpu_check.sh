#!/usr/bin/env bash
# The GPU check in one command (see scripts/gpu_check.py for the stages and the data it needs):
#   bash scripts/gpu_check.sh --data-dir shared-carry     on a CUDA machine, about 8 minutes
#   bash scripts/gpu_check.sh --tiny                      a dry run on the CPU, ci preset
# Writes results/gpu_check.json, results/gpu_check.md and results/gpu_check.log (and copies them to $OUT
# when that is set). Runs from a plain checkout: bertbook need not be installed (PYTHONPATH is set).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PYTHON" scripts/gpu_check.py "$@"
