#!/bin/bash
# Issue 22: the GLUE analogues of the paper's Fig. 4 (metric vs sparsity: dense, NeuroPrune penalty-driven,
# l1, CoFi) and Fig. 5 (metric vs heads kept: NeuroPrune target_heads, DSP joint, Michel) on all-MiniLM-L6-v2.
#   GLUE_DIR=../shared/data/glue bash scripts/glue_figures.sh [JOB ...]
# A JOB is "TASK METHOD POINT SEED" (POINT: S for np/l1/cofi, K for npK/dsp/michel, - for dense); without
# arguments the whole protocol runs in priority order (the S = 50 / K = 36 points and dense first, seed 2 last).
# Resumable: a job whose tag already has a row for its task in $RESULTS is skipped; logs in $LOGDIR.
# The recipe (chosen on the dense model only, README "GLUE recipe"): plain fine-tuning, AdamW at a constant
# lr 5e-5, no warm-up, no clipping, shuffled batches of 32, max length 128 (linear decay with warm-up and
# length-grouped batches left dense RTE at 56.0 < 58); E = 3 epochs on the small sets (MRPC, RTE, CoLA), E = 2 on
# 20,000 random SST-2 examples (--max-train-samples; 2, not the paper's 1, so the head-budget methods get the one
# recovery epoch they get on the small sets). At a target sparsity S: NeuroPrune / l1 with alpha = beta = 1e-4
# (the controller's start), penalty mode; NeuroPrune keeps its per-epoch head pruning (theta: the runner's
# default). CoFi: 2E epochs, --cofi-reg-lr 0.05 (0.01 overshoots the target at these step counts,
# docs/huggingface.md). At a head budget K: NeuroPrune reaches K after epoch E-1 (one epoch of recovery at K, as
# the MT frontier's -r1) with alpha = beta = 1e-5 (1e-4 without a sparsity controller made the penalty 4x the
# task loss on MRPC); DSP joint for E epochs; Michel: 1 dense epoch to score, top K, E epochs of fine-tuning.
# Env: PYTHON, RESULTS, LOGDIR.
cd "$(dirname "$0")/.."
G=${GLUE_DIR:?set GLUE_DIR to the glue folder (TASK/train.tsv, dev.tsv), e.g. ../shared/data/glue}
PY=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-results/glue_figures.jsonl}
LOGDIR=${LOGDIR:-/tmp/glue_figures}
if [ $# -eq 0 ]; then
  set --
  for t in MRPC SST-2; do set -- "$@" "$t dense - 1" "$t npK 36 1" "$t dsp 36 1" "$t michel 36 1" \
                                   "$t np 50 1" "$t l1 50 1" "$t cofi 50 1"; done
  for t in CoLA RTE; do set -- "$@" "$t dense - 1" "$t np 50 1" "$t l1 50 1" "$t cofi 50 1"; done
  for t in MRPC SST-2; do for k in 18 54; do for m in npK dsp michel; do set -- "$@" "$t $m $k 1"; done; done; done
  for t in MRPC SST-2 CoLA RTE; do for s in 25 70 90; do for m in np l1 cofi; do set -- "$@" "$t $m $s 1"; done; done; done
  for t in MRPC SST-2 CoLA RTE; do set -- "$@" "$t dense - 2" "$t np 50 2" "$t l1 50 2" "$t cofi 50 2"; done
  for t in MRPC SST-2; do for m in npK dsp michel; do set -- "$@" "$t $m 36 2"; done; done
fi
# every job is checked before the first one trains: a dense job with a point would be tagged fig-dense0-s2
# and land beside the dense row instead of in it, a method without its point would fail hours in
for job in "$@"; do
  read -r task method point seed extra <<< "$job"
  case $method in
    dense) ok_point='^-$' ;;
    np|l1|cofi|npK|dsp|michel) ok_point='^[1-9][0-9]*$' ;;
    *) echo "bad job '$job': unknown method '$method' (dense np l1 cofi npK dsp michel)" >&2; exit 2 ;;
  esac
  if [ -z "$task" ] || [ -n "$extra" ] || ! [[ $point =~ $ok_point ]] || ! [[ $seed =~ ^[0-9]+$ ]]; then
    echo "bad job '$job': expected \"TASK METHOD POINT SEED\" with POINT '-' for dense, S or K (a positive" \
      "integer) otherwise, e.g. \"MRPC dense - 2\" or \"MRPC np 50 1\"" >&2
    exit 2
  fi
done
mkdir -p "$LOGDIR"
for job in "$@"; do
  read -r task method point seed <<< "$job"  # checked above: four fields, a known method, its point
  case $task in
    SST-2) budget=(--epochs 2 --max-train-samples 20000); epochs=2 ;;
    *) budget=(--epochs 3); epochs=3 ;;
  esac
  np=(--np-alpha 1e-4 --np-beta 1e-4)
  case $method in
    dense)  args=(--method dense) ;;
    np)     args=(--method neuroprune "${np[@]}" --np-target-sparsity "$point") ;;
    l1)     args=(--method l1 "${np[@]}" --np-target-sparsity "$point") ;;
    cofi)   args=(--method cofi --np-target-sparsity "$point" --cofi-epochs $((2 * epochs)) --cofi-reg-lr 0.05) ;;
    npK)    args=(--method neuroprune --np-alpha 1e-5 --np-beta 1e-5 --np-target-heads "$point" --np-target-epoch $((epochs - 1))) ;;
    dsp)    args=(--method dsp --np-target-heads "$point") ;;
    michel) args=(--method michel --np-target-heads "$point") ;;
  esac
  tag="fig-$method${point#-}-s$seed"  # dense: fig-dense-s<seed>
  if [ -f "$RESULTS" ] && "$PY" -c 'import json,sys; sys.exit(0 if any(r.get("task") == sys.argv[2] and r.get("tag") == sys.argv[3] for r in map(json.loads, open(sys.argv[1]))) else 1)' "$RESULTS" "$task" "$tag"; then
    echo "done   $task $tag"; continue
  fi
  log="$LOGDIR/${task}_$tag.log"
  echo "start  $task $tag $(date -u +%T) (log $log)"
  OMP_NUM_THREADS=1 "$PY" scripts/run_glue.py --task "$task" --data-dir "$G" "${budget[@]}" --lr 5e-5 --batch-size 32 \
    --warmup-ratio 0 --lr-scheduler constant --max-seq-length 128 --threads 1 --seed "$seed" \
    --results-file "$RESULTS" "${args[@]}" --tag "$tag" > "$log" 2>&1 || { echo "FAILED $task $tag (see $log)"; continue; }
  echo "end    $task $tag $(date -u +%T): $(tail -n 1 "$log" | cut -c1-200)"
done
