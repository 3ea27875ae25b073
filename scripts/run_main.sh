#!/usr/bin/env bash
# The README's "main job": prepare the corpus, dense training, NeuroPrune (head target K and
# sparsity target S) and DSP joint (same K, same epochs), finalize, evaluate, one table + PNG.
#   bash scripts/run_main.sh --data-dir PATH/multi30k [--work-dir DIR] [--src-lang de --tgt-lang en] [...]
# Every option: bash scripts/run_main.sh --help (the same as `neuroprune-main`).
# Python: $PYTHON, else ./.venv/bin/python, else python3. Threads: all CPUs for the dense stage
# (at most $OMP_NUM_THREADS if set); the two fine-tuning runs side by side with one thread each.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
exec "$PY" -m neuroprune_fairseq.recipes.main "$@"
