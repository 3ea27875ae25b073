#!/usr/bin/env bash
# End-to-end check of head pruning under fairseq's mixed-precision optimizers, on one CUDA GPU.
#
#   bash scripts/gpu_check_mixed_precision.sh [WORK_DIR]
#   (PYTHON=... picks the interpreter; MODES="fp16 bf16" a subset; EXTRA="--cpu" a CPU dry run of
#   the script itself with MODES=memory-efficient-fp16, the one mode fairseq runs on CPU)
#
# Needs only torch (CUDA build), fairseq and this repository. For each of --fp16, --bf16,
# --memory-efficient-fp16 and --memory-efficient-bf16 it trains a tiny generated-data model with
# head pruning (2 epochs), stops a second run by --max-update in the middle of epoch 3, resumes it
# to the end of epoch 3, and checks: heads were removed after every epoch (and the end-of-epoch
# checkpoints hold the pruned heads), the training loss stayed finite, the mid-epoch checkpoint
# resumed ("Loaded checkpoint ... (epoch 3 @ N updates)") and training went on. Prints one line per
# mode and "ALL OK"; exits non-zero on the first failure. About a minute per mode.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
WORK="${1:-$(mktemp -d /tmp/np_gpu_check.XXXXXX)}"
mkdir -p "$WORK"
cd "$WORK"
export PYTHONWARNINGS=ignore
MODES="${MODES:-fp16 bf16 memory-efficient-fp16 memory-efficient-bf16}"
read -r -a EXTRA_ARGS <<< "${EXTRA:-}"
export EXTRA="${EXTRA:-}"

"$PYTHON" - <<'EOF'
import random, torch
import os
if "--cpu" not in os.environ["EXTRA"]:
    assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
    print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| bf16 supported:", torch.cuda.is_bf16_supported())
rng = random.Random(0)
words = [f"w{i}" for i in range(30)]
for split, n in [("train", 600), ("valid", 60)]:
    with open(f"{split}.src", "w") as fs, open(f"{split}.tgt", "w") as ft:
        for _ in range(n):
            s = [rng.choice(words) for _ in range(rng.randint(3, 8))]
            fs.write(" ".join(s) + "\n")
            ft.write(" ".join(reversed(s)).upper() + "\n")
EOF
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
  PER_EPOCH=$("$PYTHON" -c "import torch; print(torch.load('$D/checkpoint1.pt', map_location='cpu', weights_only=False)['optimizer_history'][-1]['num_updates'])")
  STOP=$((2 * PER_EPOCH + 2))
  "$PYTHON" -m fairseq_cli.train "${TRAIN[@]}" --"$MODE" --max-epoch 3 --max-update "$STOP" --save-dir "$D" > "$D.2.log" 2>&1 \
    || { echo "FAIL $MODE: run to --max-update $STOP failed, see $WORK/$D.2.log"; tail -30 "$D.2.log"; exit 1; }
  "$PYTHON" -m fairseq_cli.train "${TRAIN[@]}" --"$MODE" --max-epoch 3 --save-dir "$D" > "$D.3.log" 2>&1 \
    || { echo "FAIL $MODE: resume from the --max-update checkpoint failed, see $WORK/$D.3.log"; tail -30 "$D.3.log"; exit 1; }
  MODE="$MODE" D="$D" STOP="$STOP" "$PYTHON" - <<'EOF'
import math, os, re, sys, torch
mode, d, stop = os.environ["MODE"], os.environ["D"], int(os.environ["STOP"])
logs = [open(f"{d}.{i}.log").read() for i in (1, 2, 3)]
def fail(msg):
    print(f"FAIL {mode}: {msg}"); sys.exit(1)
def heads(path):
    sd = torch.load(path, map_location="cpu", weights_only=False)["model"]
    return [v.shape[0] // 8 for k, v in sd.items() if k.endswith("q_proj.weight")]
pruned = {}
for log in logs:
    for e, a, b in re.findall(r"NeuroPrune epoch (\d+): heads (\d+) -> (\d+)", log):
        pruned[int(e)] = int(b)
if sorted(pruned) != [1, 2, 3]:
    fail(f"pruning ran after epochs {sorted(pruned)}, expected 1, 2, 3")
if not pruned[3] < 36:
    fail(f"no head was removed (36 -> {pruned[3]})")
for e in (1, 2, 3):
    if sum(heads(f"{d}/checkpoint{e}.pt")) != pruned[e]:
        fail(f"checkpoint{e}.pt holds {sum(heads(f'{d}/checkpoint{e}.pt'))} heads, pruning left {pruned[e]}")
if f"(epoch 3 @ {stop} updates)" not in logs[2]:
    fail("the third run did not resume from the --max-update checkpoint")
losses = [float(x) for log in logs for x in re.findall(r"\| train \| epoch \d+ \| loss ([\-\w.]+)", log)]
if len(losses) < 3 or not all(math.isfinite(x) for x in losses):
    fail(f"end-of-epoch training losses {losses}")
skipped = sum(log.count("gradient overflow detected") for log in logs)
print(f"OK   {mode}: heads 36 -> {pruned[1]} -> {pruned[2]} -> {pruned[3]} (checkpoints agree), "
      f"train loss per epoch {losses}, resumed at update {stop}, {skipped} fp16-overflow steps skipped")
EOF
done
echo "ALL OK (logs and checkpoints in $WORK)"
