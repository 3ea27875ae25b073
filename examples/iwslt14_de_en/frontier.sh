#!/usr/bin/env bash
# The head-budget frontier (Fig. 6 + the matched table, issue 10) with the paper's protocol on
# IWSLT14 de-en: the 108-head model pretrained 15 epochs, then every method (NeuroPrune and l1
# with --np-target-heads K, DSP joint, DSP pipelined + fine-tuning, Michel + fine-tuning) for
# 15 epochs from that same dense model, K = 10 18 25 50 75 100, two seeds at K = 25 and 50,
# finalised the same way, scored on the whole test set (6,750 lines; sacrebleu + tokenized BLEU).
#
#   DATA=data/iwslt14 bash examples/iwslt14_de_en/frontier.sh [WORK_DIR] [RESULTS.jsonl]
#
# DATA: the prepare.sh output. Env: DENSE_DIR (default WORK/dense), DENSE_EPOCHS (15), DENSE_ARGS (further
# fairseq-train arguments of the dense stage, e.g. a smaller --arch; give the same to MODEL_ARGS), EPOCHS (15),
# and those of examples/multi30k_cpu/frontier_gpu.sh (JOBS, THREADS, ONLY, KS, MODEL_ARGS, PYTHON, TITLE).
# tests/test_iwslt_frontier.py runs this script end to end on the training sample with a tiny model. Resumable: the dense
# training resumes from its checkpoint_last.pt (fairseq) and finished points are skipped.
# Time: see the README in this folder (one GPU; not run here).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:?set DATA to the prepare.sh output folder}
WORK=${1:-/tmp/neuroprune_iwslt14_frontier}; RESULTS=${2:-results/frontier_iwslt14.jsonl}
DENSE_DIR=${DENSE_DIR:-$WORK/dense}
mkdir -p "$WORK"
DENSE_EPOCHS=${DENSE_EPOCHS:-15}
echo "dense pretraining ($DENSE_EPOCHS epochs) -> $DENSE_DIR (log $WORK/dense.log)"
# shellcheck disable=SC2086  # DENSE_ARGS: whitespace-separated fairseq-train arguments
EPOCHS=$DENSE_EPOCHS SAVE="$DENSE_DIR" bash examples/iwslt14_de_en/train_dense.sh ${DENSE_ARGS:-} > "$WORK/dense.log" 2>&1 \
  || { echo "dense training failed, see $WORK/dense.log" >&2; exit 1; }
RECIPE=iwslt14 EPOCHS=${EPOCHS:-15} JOBS=${JOBS:-1} ALSO_SCORE= \
  TITLE=${TITLE:-"IWSLT14 de-en, neuroprune_iwslt_de_en (108 heads), $DENSE_EPOCHS + ${EPOCHS:-15} epochs, test"} \
  bash examples/multi30k_cpu/frontier_gpu.sh "$DENSE_DIR/checkpoint_last.pt" "$DATA" "$WORK" "$RESULTS"
