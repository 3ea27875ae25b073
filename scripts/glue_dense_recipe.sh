#!/bin/bash
# issue 22, item 1: the dense fine-tuning recipe search (dense model only), full training sets, MiniLM.
# Each run appends a row to results/glue_dense_recipe.jsonl (the dev metric and "before", the untrained score).
#   GLUE_DIR=../shared/data/glue bash scripts/glue_dense_recipe.sh ["RTE 1e-4 3" "CoLA 5e-5 3" ...]
cd "$(dirname "$0")/.."
G=${GLUE_DIR:?set GLUE_DIR to the glue folder (TASK/train.tsv, dev.tsv), e.g. ../shared/data/glue}
C="--data-dir $G --batch-size 32 --warmup-ratio 0.1 --lr-scheduler linear --max-seq-length 128 --group-by-length --threads 1 --results-file results/glue_dense_recipe.jsonl --method dense"
[ $# -gt 0 ] || set -- "RTE 1e-4 3" "CoLA 1e-4 3" "RTE 5e-5 3" "CoLA 5e-5 3"
for spec in "$@"; do
  set -- $spec  # task lr epochs
  OMP_NUM_THREADS=1 .venv/bin/python scripts/run_glue.py $C --task "$1" --lr "$2" --epochs "$3" --tag "dense-$1-lr$2-e$3"
done
