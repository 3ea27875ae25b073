#!/usr/bin/env bash
# The head-budget frontier of issue 10 (Fig. 6 + the matched table) on one GPU machine:
# every method from the same dense Multi30k model, E epochs each, finalised the same way, test BLEU.
#
#   bash examples/multi30k_cpu/frontier_gpu.sh DENSE.pt PREP_DIR [WORK_DIR] [RESULTS.jsonl]
#   e.g. bash examples/multi30k_cpu/frontier_gpu.sh ../shared/models/multi30k_de_en/checkpoint_dense_e15.pt \
#            ../shared/models/multi30k_de_en/prep /tmp/frontier results/frontier_multi30k.jsonl
#
# Jobs (scripts/sweep_heads.py, one per line of WORK/jobs.txt), run JOBS at a time on the one GPU:
#   neuroprune, l1 (--np-target-heads K):      K = 18 25 50 75 100 (18 = one head per module, the
#                                               smallest budget a physical model can keep; 10 < 18 modules)
#   dsp-joint, dsp-pipelined, michel:           K = 10 18 25 50 75 100
#   seed 2 of neuroprune and dsp-joint at K = 25 and 50; the dense model itself;
#   neuroprune-S50, neuroprune-S70 (NeuroPrune with --np-proximal --np-target-sparsity 50 / 70): K = 18 25 50 75 100.
# NeuroPrune/l1 labels get -r<n> when the last n epochs recover at K (TARGET_EPOCH < EPOCHS).
# Env: JOBS (default 8), EPOCHS (3), TARGET_EPOCH (NeuroPrune/l1 reach K after this epoch; default EPOCHS-1, so the
# last epoch recovers at K, as DSP pipelined and Michel fine-tune after pruning; the committed H100 rows used
# TARGET_EPOCH=EPOCHS, the CPU rows labelled *-r1 EPOCHS-1), THREADS (OMP threads per job, 2), PYTHON, ONLY (a grep -E filter of
# the job lines, e.g. ONLY='^neuroprune'), RECIPE (multi30k; iwslt14: examples/iwslt14_de_en/frontier.sh), TITLE. Resumable: rerun the same command; finished points are skipped.
# Generation speed is measured while other jobs share the GPU: for speed figures rerun with JOBS=1
# or use scripts/bench_speed.py on the finalised checkpoints (WORK/runs/*/final.pt).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,18p' "$0"; exit 2; }
DENSE=$(realpath "$1"); PREP=$(realpath "$2")
WORK=${3:-/tmp/neuroprune_frontier}; RESULTS=${4:-results/frontier_multi30k.jsonl}
cd "$(dirname "$0")/../.."
mkdir -p "$WORK/jobs" "$(dirname "$RESULTS")"
WORK=$(realpath "$WORK"); RESULTS=$(realpath -m "$RESULTS")
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
JOBS=${JOBS:-8}; EPOCHS=${EPOCHS:-3}; export OMP_NUM_THREADS=${THREADS:-2}
TARGET_EPOCH=${TARGET_EPOCH:-$("$PY" -c 'import sys; from neuroprune_fairseq.recipes.common import recovery_target_epoch as r; print(r(sys.argv[1]))' "$EPOCHS")}

{
  for k in 10 18 25 50 75 100; do echo "dsp-joint $k 1"; done
  for k in 25 50; do echo "dsp-joint $k 2"; done
  for k in 18 25 50 75 100; do echo "neuroprune $k 1"; echo "l1 $k 1"; done
  for k in 25 50; do echo "neuroprune $k 2"; done
  for k in 18 25 50 75 100; do echo "neuroprune-S50 $k 1"; echo "neuroprune-S70 $k 1"; done
  for k in 10 18 25 50 75 100; do echo "dsp-pipelined $k 1"; echo "michel $k 1"; done
  echo "dense 108 1"
} | { grep -E "${ONLY:-.}" || true; } > "$WORK/jobs.txt"
echo "$(wc -l < "$WORK/jobs.txt") jobs, $JOBS at a time, E=$EPOCHS (NeuroPrune/l1 reach K after epoch $TARGET_EPOCH) -> $RESULTS (logs: $WORK/jobs/)"

run_one() {  # method K seed; neuroprune-S<S> = neuroprune with --np-proximal --np-target-sparsity S
  local m=$1 label=$1 extra=()
  case $m in neuroprune-S*) extra=(--model-args "--np-proximal --np-target-sparsity ${m#neuroprune-S}"); m=neuroprune ;; esac
  case $m in neuroprune|l1)
    extra+=(--target-epoch "$TARGET_EPOCH")
    [ "$TARGET_EPOCH" -lt "$EPOCHS" ] && label="$label-r$(( EPOCHS - TARGET_EPOCH ))"  # epochs of recovery at K
    [ "$label" != "$m" ] && extra+=(--label "$label") ;;
  esac
  "$PY" scripts/sweep_heads.py --method "$m" --heads "$2" --seed "$3" --epochs "$EPOCHS" "${extra[@]}" --dense "$DENSE" \
    --prep "$PREP" --work-dir "$WORK" --results "$RESULTS" --recipe "$RECIPE" > "$WORK/jobs/$1_K$2_s$3.log" 2>&1 \
    && echo "done   $1 K=$2 seed=$3: $(grep -o 'BLEU [0-9.]* heads [0-9]*' "$WORK/jobs/$1_K$2_s$3.log" | tail -1)" \
    || { echo "FAILED $1 K=$2 seed=$3 (see $WORK/jobs/$1_K$2_s$3.log)"; return 1; }
}
RECIPE=${RECIPE:-multi30k}
export -f run_one; export PY EPOCHS TARGET_EPOCH DENSE PREP WORK RESULTS RECIPE
T0=$(date +%s)
status=0
xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _ < "$WORK/jobs.txt" || status=$?
echo "wall $(( $(date +%s) - T0 )) s"
"$PY" scripts/plot_frontier.py "$RESULTS" --out "${RESULTS%.jsonl}.png" --table "${RESULTS%.jsonl}.md" \
  --bleu-tolerance 1 2 --title "${TITLE:-Multi30k de-en, neuroprune_multi30k_cpu (108 heads), E=$EPOCHS, test_2016_flickr}" > /dev/null
echo "plot: ${RESULTS%.jsonl}.png  tables: ${RESULTS%.jsonl}.md"
exit $status
