#!/usr/bin/env bash
# CPU preset on real data (Multi30k de-en), about 2 hours on 2 free CPU cores:
#   prepare (joint sentencepiece BPE 8k + fairseq-preprocess) -> dense pretraining of
#   neuroprune_multi30k_cpu (15 epochs) -> 5 NeuroPrune points + the l1 baseline
#   (3 fine-tuning epochs each, sweep.json) -> finalize + test BLEU per point -> frontier plot.
# Resumable: rerun the same command after an interruption.
#   bash examples/multi30k_cpu/run_preset.sh --data-dir PATH/multi30k [--work-dir DIR] [--results FILE] [sweep.py options]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RESULTS=results/multi30k_cpu_sweep.jsonl
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --results) RESULTS=$2; shift 2;;
    *) ARGS+=("$1"); shift;;
  esac
done
"$PY" scripts/sweep.py --config examples/multi30k_cpu/sweep.json --results "$RESULTS" \
  --work-dir "${NEUROPRUNE_WORK:-/tmp/neuroprune_multi30k_cpu}" "${ARGS[@]}"
[ -s "$RESULTS" ] || exit 0
"$PY" scripts/plot_frontier.py "$RESULTS" --out "${RESULTS%.jsonl}.png" --table "${RESULTS%.jsonl}.md" \
  --title "Multi30k de-en, neuroprune_multi30k_cpu (108 heads), test_2016_flickr"
