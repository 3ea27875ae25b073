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
  MODE="$SM" D="$D" REPO="$REPO" "$PYTHON" - <<'EOF'
import math, os, re, sys
sys.path.insert(0, os.environ["REPO"])
import torch
from neuroprune_fairseq.commands.finalize import finalize
mode, d = os.environ["MODE"], os.environ["D"]
log = open(f"{d}.log").read()
def fail(msg):
    print(f"FAIL sparse {mode}: {msg}"); sys.exit(1)
if "mode penalty, proximal metric optimizer" not in log:
    fail("the target sparsity did not start in the penalty mode with Adam's metric")
if "was not reached" in log:
    fail("the run says the target was not reached")
losses = [float(x) for x in re.findall(r"\| train \| epoch \d+ .*?\| loss ([\-\w.]+)", log)]
if len(losses) != 3 or not all(math.isfinite(x) for x in losses):
    fail(f"end-of-epoch training losses {losses}")
last = [l for l in log.splitlines() if "| train | epoch 003" in l][0]
logged = float(re.search(r"\| sparsity ([\d.]+)", last).group(1))
cut = float(re.search(r"\| cut_sparsity ([\d.]+)", last).group(1))
sd = torch.load(f"{d}/checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]
mats = [v for k, v in sd.items() if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight",
                                                "fc1.weight", "fc2.weight"))]
ckpt = 100.0 * sum(int((v == 0).sum()) for v in mats) / sum(v.numel() for v in mats)
info = finalize(f"{d}/checkpoint_last.pt", f"{d}/final.pt", 0.0, "bin", overwrite=True)
if not 50.0 <= info["sparsity"] <= 50.5:
    fail(f"finalize counts {info['sparsity']:.2f}% (target 50)")
if abs(ckpt - logged) > 0.2:  # the log's count is epoch 3's average: the zeros are fixed after the ramp
    fail(f"the checkpoint's weights hold {ckpt:.2f}% zeros, the log says {logged:.2f}%")
print(f"OK   sparse {mode}: finalized sparsity {info['sparsity']:.2f}% (checkpoint zeros {ckpt:.2f}%, "
      f"logged {logged:.2f}%, cut made {cut:.2f} points), train loss per epoch {losses}")
EOF
done
echo "ALL OK (logs and checkpoints in $WORK)"
