#!/usr/bin/env bash
# The head-budget frontier (Fig. 6 + the matched table, issue 10) with the paper's protocol on
# IWSLT14 de-en: the 108-head model pretrained 15 epochs, then every method (NeuroPrune and l1
# with --np-target-heads K, DSP joint, DSP pipelined + fine-tuning, Michel + fine-tuning) for
# 15 epochs from that same dense model, K = 10 18 25 50 75 100, two seeds at K = 25 and 50,
# finalised the same way, scored on the whole test set (6,750 lines; sacrebleu + tokenized BLEU).
#
#   DATA=data/iwslt14 bash examples/iwslt14_de_en/frontier.sh [WORK_DIR] [RESULTS.jsonl]
#
# DATA: the prepare.sh output. Env: DENSE_DIR (default WORK/dense), EPOCHS (15), and those of
# examples/multi30k_cpu/frontier_gpu.sh (JOBS, THREADS, ONLY, PYTHON). Resumable: the dense
# training resumes from its checkpoint_last.pt (fairseq) and finished points are skipped.
# Time: see the README in this folder (one GPU; not run here).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the prepare.sh output folder}
WORK=${1:-/tmp/neuroprune_iwslt14_frontier}; RESULTS=${2:-results/frontier_iwslt14.jsonl}
DENSE_DIR=${DENSE_DIR:-$WORK/dense}
mkdir -p "$WORK"
echo "dense pretraining (15 epochs) -> $DENSE_DIR (log $WORK/dense.log)"
EPOCHS=15 SAVE="$DENSE_DIR" bash examples/iwslt14_de_en/train_dense.sh > "$WORK/dense.log" 2>&1 \
  || { echo "dense training failed, see $WORK/dense.log" >&2; exit 1; }
RECIPE=iwslt14 EPOCHS=${EPOCHS:-15} JOBS=${JOBS:-1} ALSO_SCORE= \
  TITLE="IWSLT14 de-en, neuroprune_iwslt_de_en (108 heads), 15 + ${EPOCHS:-15} epochs, test" \
  bash examples/multi30k_cpu/frontier_gpu.sh "$DENSE_DIR/checkpoint_last.pt" "$DATA" "$WORK" "$RESULTS"
