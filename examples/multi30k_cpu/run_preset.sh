#!/usr/bin/env bash
# CPU preset on real data (Multi30k de-en), about 2 hours on 2 free CPU cores:
#   prepare (joint sentencepiece BPE 8k + fairseq-preprocess) -> dense pretraining of
#   neuroprune_multi30k_cpu (15 epochs) -> 6 NeuroPrune points + the l1 baseline
#   (2 fine-tuning epochs each, sweep.json) -> DSP over K (pipelined, sweep_dsp.py) ->
#   finalize + test BLEU per point -> one results file -> frontier plot + table.
# Resumable: rerun the same command after an interruption.
#   bash examples/multi30k_cpu/run_preset.sh --data-dir PATH/multi30k [--work-dir DIR] [--results FILE] [sweep.py options]
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
RESULTS=results/sweep_multi30k_cpu.jsonl
WORK=${NEUROPRUNE_WORK:-/tmp/neuroprune_multi30k_cpu}
DENSE_EPOCHS=15
DENSE_DIR=
# DSP baseline (pipelined: gates only on the dense model, 1 epoch, T = 45 of its ~130 updates)
DSP_HEADS=${DSP_HEADS:-10,25,50,75,100}   # DSP_HEADS=none skips it
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --results) RESULTS=$2; shift 2;;
    --work-dir) WORK=$2; shift 2;;
    --dense-epochs) DENSE_EPOCHS=$2; ARGS+=("$1" "$2"); shift 2;;
    --dense-dir) DENSE_DIR=$2; ARGS+=("$1" "$2"); shift 2;;
    *) ARGS+=("$1"); shift;;
  esac
done
"$PY" scripts/sweep.py --config examples/multi30k_cpu/sweep.json --results "$RESULTS" --work-dir "$WORK" "${ARGS[@]}"
if [ "$DSP_HEADS" != none ]; then
  "$PY" scripts/sweep_dsp.py --data-bin "$WORK/prep/bin" \
    --pretrained "${DENSE_DIR:-$WORK/dense_e$DENSE_EPOCHS}/checkpoint_last.pt" \
    --mode pipelined --heads "$DSP_HEADS" --epochs 1 --anneal-steps 45 --gate-lr 0.2 \
    --work-dir "$WORK/dsp" --results "$RESULTS"
fi
[ -s "$RESULTS" ] || exit 0
"$PY" scripts/plot_frontier.py "$RESULTS" --out "${RESULTS%.jsonl}.png" --table "${RESULTS%.jsonl}.md" --bleu-tolerance 5 \
  --title "Multi30k de-en, neuroprune_multi30k_cpu (108 heads), test_2016_flickr"
