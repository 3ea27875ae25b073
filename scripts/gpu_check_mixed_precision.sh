#!/usr/bin/env bash
# End-to-end check of head pruning under fairseq's mixed-precision optimizers, on one CUDA GPU.
#
#   bash scripts/gpu_check_mixed_precision.sh [WORK_DIR]
#   (PYTHON=... picks the interpreter; MODES="fp16 bf16" a subset; EXTRA="--cpu" a CPU dry run of
#   the script itself with MODES=memory-efficient-fp16 SPARSE_MODES=memory-efficient-fp16, the one
#   mode fairseq runs on CPU)
#
# Needs only torch (CUDA build), fairseq and this repository. For each of --fp16, --bf16,
# --memory-efficient-fp16 and --memory-efficient-bf16 it trains a tiny generated-data model with
# head pruning (2 epochs), stops a second run by --max-update in the middle of epoch 3, resumes it
# to the end of epoch 3, and checks: heads were removed after every epoch (and the end-of-epoch
# checkpoints hold the pruned heads), the training loss stayed finite, the mid-epoch checkpoint
# resumed ("Loaded checkpoint ... (epoch 3 @ N updates)") and training went on. Prints one line per
# mode and "ALL OK"; exits non-zero on the first failure. About a minute per mode.
#
# Then the sparsity modes (SPARSE_MODES, default "fp16 fp16-no-flatten memory-efficient-fp16 amp";
# fp16-no-flatten is --fp16 --fp16-no-flatten-grads; SPARSE_MODES="" skips them): 3 epochs of
# --np-target-sparsity 50 in the penalty mode (the proximal step with Adam's metric, the controller,
# the final cut; the ramp ends with epoch 2: --np-target-end 0.5), without head pruning, checking:
# finalize counts 50 <= sparsity <= 50.5, no "was not reached" warning, finite losses, and the
# checkpoint's weights (under --fp16 the fp16 model, not the fp32 master copy the step acts on) hold
# the zeros the log reports for epoch 3. About 30 s per mode.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
WORK="${1:-$(mktemp -d /tmp/np_gpu_check.XXXXXX)}"
mkdir -p "$WORK"
cd "$WORK"
export PYTHONWARNINGS=ignore
MODES="${MODES-fp16 bf16 memory-efficient-fp16 memory-efficient-bf16}"  # MODES="" skips head pruning
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"

# the toy data and the checks: neuroprune_fairseq/recipes/gpu_check.py
CHECK=(env PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m neuroprune_fairseq.recipes.gpu_check)
if [[ "${EXTRA:-}" == *--cpu* ]]; then "${CHECK[@]}" data --cpu; else "${CHECK[@]}" data; fi
[ -d bin ] || "$PYTHON" -m fairseq_cli.preprocess --source-lang src --target-lang tgt --trainpref train \
    --validpref valid --destdir bin --joined-dictionary --workers 1 > preprocess.log 2>&1

# 6 heads of dimension 8 (tensor-core friendly), 2+2 layers: 36 heads in 6 attention modules
TRAIN=(bin --user-dir "$REPO/neuroprune_fairseq" --task neuroprune_translation --arch neuroprune_transformer
  --encoder-layers 2 --decoder-layers 2 --encoder-embed-dim 48 --decoder-embed-dim 48
  --encoder-ffn-embed-dim 96 --decoder-ffn-embed-dim 96 --encoder-attention-heads 6 --decoder-attention-heads 6
  --criterion neuroprune_ce --label-smoothing 0.1 --np-alpha 0.05 --np-beta 0.1 --np-theta 0.3
  --np-penalty-scale token --optimizer adam --lr 0.005 --max-tokens 500 --log-interval 5
  --no-progress-bar --seed 1 --num-workers 0 --save-interval-updates 5 "${EXTRA_ARGS[@]}")

for MODE in $MODES; do
  D="ck_$MODE"; rm -rf "$D"
  "$PYTHON" -m fairseq_cli.train "${TRAIN[@]}" --"$MODE" --max-epoch 2 --save-dir "$D" > "$D.1.log" 2>&1 \
    || { echo "FAIL $MODE: training failed, see $WORK/$D.1.log"; tail -30 "$D.1.log"; exit 1; }
  PER_EPOCH=$("${CHECK[@]}" updates-per-epoch "$D/checkpoint1.pt")
  STOP=$((2 * PER_EPOCH + 2))
  "$PYTHON" -m fairseq_cli.train "${TRAIN[@]}" --"$MODE" --max-epoch 3 --max-update "$STOP" --save-dir "$D" > "$D.2.log" 2>&1 \
    || { echo "FAIL $MODE: run to --max-update $STOP failed, see $WORK/$D.2.log"; tail -30 "$D.2.log"; exit 1; }
  "$PYTHON" -m fairseq_cli.train "${TRAIN[@]}" --"$MODE" --max-epoch 3 --save-dir "$D" > "$D.3.log" 2>&1 \
    || { echo "FAIL $MODE: resume from the --max-update checkpoint failed, see $WORK/$D.3.log"; tail -30 "$D.3.log"; exit 1; }
  "${CHECK[@]}" heads "$MODE" "$D" "$STOP"
done
SPARSE_MODES="${SPARSE_MODES-fp16 fp16-no-flatten memory-efficient-fp16 amp}"
for SM in $SPARSE_MODES; do
  case "$SM" in
    fp16-no-flatten) FLAGS=(--fp16 --fp16-no-flatten-grads) ;;
    *) FLAGS=(--"$SM") ;;
  esac
  D="ck_sparse_$SM"; rm -rf "$D"
  "$PYTHON" -m fairseq_cli.train "${TRAIN[@]}" "${FLAGS[@]}" --np-no-head-pruning --np-target-sparsity 50 \
      --np-target-gain 0.5 --np-target-end 0.5 --max-epoch 3 --save-dir "$D" > "$D.log" 2>&1 \
    || { echo "FAIL sparse $SM: training failed, see $WORK/$D.log"; tail -30 "$D.log"; exit 1; }
  "${CHECK[@]}" sparse "$SM" "$D"
done
echo "ALL OK (logs and checkpoints in $WORK)"
