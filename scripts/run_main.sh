#!/usr/bin/env bash
# The README's "main job" (short): prepare Multi30k, dense pretraining + one NeuroPrune
# point, then BLEU / heads kept / sparsity.  Usage:
#   bash scripts/run_main.sh --data-dir PATH/multi30k [--work-dir DIR] [--dense-epochs 3] [--np-epochs 1]
# Python: $PYTHON, else ./.venv/bin/python, else python3.  Threads: $OMP_NUM_THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
exec "$PY" scripts/run_main.py "$@"
