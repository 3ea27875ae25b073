#!/usr/bin/env bash
# The head-budget frontier (issues 10, 21: Fig. 6 + the matched table): every method from the same dense
# Multi30k model, E epochs each with the same schedule, finalised the same way, BLEU on the test set and on
# every split in ALSO_SCORE (default: valid), the dense fine-tuned control included.
#
#   bash examples/multi30k_cpu/frontier_gpu.sh DENSE.pt PREP_DIR [WORK_DIR] [RESULTS.jsonl]
#   e.g. bash examples/multi30k_cpu/frontier_gpu.sh ../shared/models/multi30k_de_en_prenorm/checkpoint_dense_prenorm_e8.pt \
#            ../shared/models/multi30k_de_en_prenorm/prep /tmp/frontier results/frontier_multi30k_prenorm.jsonl
#
# Jobs (scripts/sweep_heads.py, one per line of WORK/jobs.txt, in priority order), run JOBS at a time:
#   dense (no training), dense-ft (label_smoothed_cross_entropy, E epochs, seeds 1 and 2: the reference);
#   neuroprune (head control only), dsp-joint, neuroprune-S50, michel, dsp-pipelined, neuroprune-S70, l1-S50
#   at K in KS (default 18 25 50 75 100; 18 = one head per module, the smallest budget a physical model keeps);
#   seed 2 of neuroprune and dsp-joint at K = 25 and 50. <method>-S<S> = the method with --np-proximal
#   --np-target-sparsity S (the penalty-driven target, --np-target-mode penalty). WITH_L1=1 adds l1 with head
#   control only, WITH_K10=1 the K = 10 points of DSP/Michel (the earlier frontier's).
# NeuroPrune/l1 labels get -r<n> when the last n epochs recover at K (TARGET_EPOCH < EPOCHS).
# Env: JOBS (default 8), EPOCHS (3), TARGET_EPOCH (NeuroPrune/l1 reach K after this epoch; default EPOCHS-1, so the
# last epoch recovers at K, as DSP pipelined and Michel fine-tune after pruning), THREADS (OMP threads per job, 2),
# PYTHON, ONLY (a grep -E filter of the job lines, e.g. ONLY='^neuroprune'), RECIPE (multi30k-prenorm: the shared
# pre-norm start's model arguments with Adam lr 1e-3, inverse_sqrt, 100 warm-up updates, max-tokens 2048;
# multi30k: the earlier post-norm 15-epoch start's; iwslt14: examples/iwslt14_de_en/frontier.sh), KS, ALSO_SCORE,
# MODEL_ARGS (fairseq-train arguments added to every training phase, e.g. another --arch of the dense model), TITLE.
# Resumable: rerun the same command; finished points are skipped, an interrupted one resumes.
# Generation speed is measured while other jobs share the machine: for speed figures rerun with JOBS=1
# or use scripts/bench_speed.py on the finalised checkpoints (WORK/runs/*/final.pt). THRESHOLD: finalize
# --threshold of every model (default 0; the earlier frontier used 1e-3).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,25p' "$0"; exit 2; }
DENSE=$(realpath "$1"); PREP=$(realpath "$2")
WORK=${3:-/tmp/neuroprune_frontier}; RESULTS=${4:-results/frontier_multi30k_prenorm.jsonl}
cd "$(dirname "$0")/../.."
mkdir -p "$WORK/jobs" "$(dirname "$RESULTS")"
WORK=$(realpath "$WORK"); RESULTS=$(realpath -m "$RESULTS")
PY=${PYTHON:-}
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
JOBS=${JOBS:-8}; EPOCHS=${EPOCHS:-3}; export OMP_NUM_THREADS=${THREADS:-2}
RECIPE=${RECIPE:-multi30k-prenorm}; KS=${KS:-18 25 50 75 100}
ALSO_SCORE=${ALSO_SCORE-valid}  # further splits scored like test (rows: bleu_sets); '' for none
TARGET_EPOCH=${TARGET_EPOCH:-$("$PY" -c 'import sys; from neuroprune_fairseq.recipes.presets import recovery_target_epoch as r; print(r(sys.argv[1]))' "$EPOCHS")}

{
  # in priority order (a CPU run that stops early has the control and the paper's main comparison first)
  echo "dense 0 1"; echo "dense-ft 0 1"  # (K of the dense model: all its heads)
  for k in $KS; do echo "neuroprune $k 1"; echo "dsp-joint $k 1"; done
  for k in $KS; do echo "neuroprune-S50 $k 1"; echo "michel $k 1"; echo "dsp-pipelined $k 1"; done
  for k in $KS; do echo "neuroprune-S70 $k 1"; echo "l1-S50 $k 1"; done
  echo "dense-ft 0 2"
  for k in 25 50; do echo "neuroprune $k 2"; echo "dsp-joint $k 2"; done
  if [ -n "${WITH_L1:-}" ]; then for k in $KS; do echo "l1 $k 1"; done; fi
  if [ -n "${WITH_K10:-}" ]; then echo "dsp-joint 10 1"; echo "dsp-pipelined 10 1"; echo "michel 10 1"; fi
} | { grep -E "${ONLY:-.}" || true; } > "$WORK/jobs.txt"
echo "$(wc -l < "$WORK/jobs.txt") jobs, $JOBS at a time, E=$EPOCHS (NeuroPrune/l1 reach K after epoch $TARGET_EPOCH) -> $RESULTS (logs: $WORK/jobs/)"

run_one() {  # method K seed; <neuroprune|l1>-S<S> = that method with --np-proximal --np-target-sparsity S (penalty-driven)
  local m=$1 label=$1 extra=()
  local margs=$MODEL_ARGS
  case $m in neuroprune-S*|l1-S*) margs="$margs --np-proximal --np-target-sparsity ${m#*-S}"; m=${m%%-S*} ;; esac
  [ -n "${margs// /}" ] && extra=(--model-args "${margs# }")
  case $m in neuroprune|l1)
    extra+=(--target-epoch "$TARGET_EPOCH")
    [ "$TARGET_EPOCH" -lt "$EPOCHS" ] && label="$label-r$(( EPOCHS - TARGET_EPOCH ))"  # epochs of recovery at K
    [ "$label" != "$m" ] && extra+=(--label "$label") ;;
  esac
  "$PY" scripts/sweep_heads.py --method "$m" --heads "$2" --seed "$3" --epochs "$EPOCHS" "${extra[@]}" --dense "$DENSE" \
    --prep "$PREP" --work-dir "$WORK" --results "$RESULTS" --recipe "$RECIPE" --also-score "$ALSO_SCORE" --threshold "$THRESHOLD" > "$WORK/jobs/$1_K$2_s$3.log" 2>&1 \
    && echo "done   $1 K=$2 seed=$3: $(grep -o 'BLEU [0-9.]* heads [0-9]*' "$WORK/jobs/$1_K$2_s$3.log" | tail -1)" \
    || { echo "FAILED $1 K=$2 seed=$3 (see $WORK/jobs/$1_K$2_s$3.log)"; return 1; }
}
THRESHOLD=${THRESHOLD:-0}  # finalize --threshold of every model (0: only exact zeros count)
MODEL_ARGS=${MODEL_ARGS:-}  # further fairseq-train arguments of every training phase (after the recipe's: they win)
export -f run_one; export PY EPOCHS TARGET_EPOCH DENSE PREP WORK RESULTS RECIPE ALSO_SCORE THRESHOLD MODEL_ARGS
T0=$(date +%s)
status=0
xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _ < "$WORK/jobs.txt" || status=$?
echo "wall $(( $(date +%s) - T0 )) s"
"$PY" scripts/plot_frontier.py "$RESULTS" --out "${RESULTS%.jsonl}.png" --table "${RESULTS%.jsonl}.md" \
  --bleu-tolerance 1 2 --title "${TITLE:-Multi30k de-en, neuroprune_multi30k_cpu (108 heads), E=$EPOCHS}" > /dev/null
echo "plot: ${RESULTS%.jsonl}.png  tables: ${RESULTS%.jsonl}.md"
exit $status
