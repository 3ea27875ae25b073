#!/usr/bin/env bash
# The CPU GLUE sweep of docs/huggingface.md: dense vs NeuroPrune vs l1 on the installed
# all-MiniLM-L6-v2. Usage: GLUE_DIR=/path/to/glue_data scripts/hf_glue_sweep.sh [TASK[:N] ...]
# TASK:N trains on N random examples of TASK (default N; 0 = the whole training set).
# Env: PYTHON (default python), RESULTS (default results/hf_glue.jsonl), LOGDIR (default /tmp/hf_runs), N (train samples, 1000),
#      EPOCHS (2), METHODS (default "dense np1 np3 l1"), RUN (a label added to tags and log names).
# Resumable: a run whose log already ends with its result line is skipped (delete the log to redo it).
# Presets: np1 alpha=beta=1e-4 theta 0.45 | np2 alpha=beta=1e-3 theta 0.5 | np3 alpha=beta=1e-4 theta 0.5
#          l1 alpha=beta=1e-5 | l1w alpha=beta=1e-6
#          npS<S> = np1 with --np-proximal --np-target-sparsity S | l1S<S> = l1 with the same (Fig. 4's analogue:
#          METHODS="npS25 npS50 npS70 npS90 l1S25 l1S50 l1S70 l1S90")
set -u
: "${GLUE_DIR:?set GLUE_DIR to a glue_data folder}"
RESULTS=${RESULTS:-results/hf_glue.jsonl}
LOGDIR=${LOGDIR:-/tmp/hf_runs}
N=${N:-1000}
EPOCHS=${EPOCHS:-2}
METHODS=${METHODS:-"dense np1 np3 l1"}
RUN=${RUN:-}
TASKS=${*:-"RTE MRPC CoLA SST-2"}
mkdir -p "$LOGDIR"
for spec in $TASKS; do
  task=${spec%%:*}
  n=$N; [[ $spec == *:* ]] && n=${spec#*:}
  size=(--max-train-samples "$n"); [[ $n == 0 ]] && size=()
  common=(--data-dir "$GLUE_DIR" "${size[@]}" --epochs "$EPOCHS" --lr 1e-4 --batch-size 16
          --max-seq-length 128 --threads 1 --seed 42 --results-file "$RESULTS")
  for m in $METHODS; do
    case $m in
      dense) args=(--method dense) ;;
      np1)   args=(--method neuroprune --np-alpha 1e-4 --np-beta 1e-4 --np-theta 0.45) ;;
      np2)   args=(--method neuroprune --np-alpha 1e-3 --np-beta 1e-3 --np-theta 0.5) ;;
      np3)   args=(--method neuroprune --np-alpha 1e-4 --np-beta 1e-4 --np-theta 0.5) ;;
      l1)    args=(--method l1 --np-alpha 1e-5 --np-beta 1e-5) ;;
      l1w)   args=(--method l1 --np-alpha 1e-6 --np-beta 1e-6) ;;
      npS*)  args=(--method neuroprune --np-alpha 1e-4 --np-beta 1e-4 --np-theta 0.45 --np-proximal --np-target-sparsity "${m#npS}") ;;
      l1S*)  args=(--method l1 --np-alpha 1e-5 --np-beta 1e-5 --np-proximal --np-target-sparsity "${m#l1S}") ;;
      *) echo "unknown method $m" >&2; exit 2 ;;
    esac
    tag="$m${RUN:+-$RUN}"
    log="$LOGDIR/${task}_${tag}.log"
    if [[ -f $log ]] && tail -n 1 "$log" | grep -q '^{"task"'; then
      echo "=== $task $tag: done already ($log)"; continue
    fi
    echo "=== $task $tag n=$n $(date -u +%T)"
    "${PYTHON:-python}" scripts/run_glue.py --task "$task" "${common[@]}" "${args[@]}" --tag "$tag" > "$log" 2>&1
    tail -n 1 "$log"
  done
done
