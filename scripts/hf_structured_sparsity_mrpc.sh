#!/bin/bash
# issue 20, GLUE MRPC (full training set), MiniLM: dense, NeuroPrune / l1 penalty-driven at S=50/90, NeuroPrune cut at S=50
cd "$(dirname "$0")/.."
G=${GLUE_DIR:?set GLUE_DIR to the glue folder (MRPC/train.tsv, dev.tsv), e.g. ../shared/data/glue}
COMMON="--task MRPC --data-dir $G --epochs 2 --lr 1e-4 --batch-size 32 --warmup-ratio 0.1 --lr-scheduler linear --max-seq-length 128 --group-by-length --threads 1 --results-file results/structured_sparsity_mrpc.jsonl"
NP="--np-alpha 1e-4 --np-beta 1e-4 --np-no-prune-heads"
run() { OMP_NUM_THREADS=1 .venv/bin/python scripts/run_glue.py $COMMON "$@"; }
( run --method dense --tag dense
  run --method neuroprune $NP --np-target-sparsity 50 --tag np-penalty-50
  run --method neuroprune $NP --np-target-sparsity 50 --np-target-mode cut --np-proximal --tag np-cut-50 ) > ${LOG_DIR:-/tmp}/mrpc_lane1.log 2>&1 &
( run --method l1 $NP --np-target-sparsity 50 --tag l1-penalty-50
  run --method neuroprune $NP --np-target-sparsity 90 --tag np-penalty-90
  run --method l1 $NP --np-target-sparsity 90 --tag l1-penalty-90 ) > ${LOG_DIR:-/tmp}/mrpc_lane2.log 2>&1 &
wait
