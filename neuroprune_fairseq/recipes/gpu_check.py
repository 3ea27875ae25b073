"""The checks of ``scripts/gpu_check_mixed_precision.sh`` (head pruning and target sparsity under
fairseq's mixed-precision optimizers, on one CUDA GPU). The script trains; this module writes the
toy data and reads what the runs left, one subcommand per step, run in the work folder:

    python -m neuroprune_fairseq.recipes.gpu_check data [--cpu]
    python -m neuroprune_fairseq.recipes.gpu_check updates-per-epoch CKPT
    python -m neuroprune_fairseq.recipes.gpu_check heads MODE DIR STOP
    python -m neuroprune_fairseq.recipes.gpu_check sparse MODE DIR

Each check prints one ``OK`` line, or a ``FAIL`` line and exits 1.
"""
import argparse
import math
import random
import re
import sys

#: the script's model: 6 heads in each of 6 attention modules
DENSE_HEADS = 36


def fail(msg: str) -> None:
    print(f"FAIL {msg}")
    sys.exit(1)


def write_data(cpu: bool) -> None:
    """Toy source/target pairs (the target: the source reversed, upper-cased) in the current folder."""
    import torch

    if not cpu:
        assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
        print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| bf16 supported:",
              torch.cuda.is_bf16_supported())
    rng = random.Random(0)
    words = [f"w{i}" for i in range(30)]
    for split, n in [("train", 600), ("valid", 60)]:
        with open(f"{split}.src", "w") as fs, open(f"{split}.tgt", "w") as ft:
            for _ in range(n):
                s = [rng.choice(words) for _ in range(rng.randint(3, 8))]
                fs.write(" ".join(s) + "\n")
                ft.write(" ".join(reversed(s)).upper() + "\n")


def check_heads(mode: str, d: str, stop: int) -> None:
    """Heads removed after every epoch (the end-of-epoch checkpoints hold them), the mid-epoch
    checkpoint resumed, finite training losses."""
    from neuroprune_fairseq.fairseq_adapter.checkpoints import active_heads

    logs = [open(f"{d}.{i}.log").read() for i in (1, 2, 3)]
    pruned = {}
    for log in logs:
        for e, _a, b in re.findall(r"NeuroPrune epoch (\d+): heads (\d+) -> (\d+)", log):
            pruned[int(e)] = int(b)
    if sorted(pruned) != [1, 2, 3]:
        fail(f"{mode}: pruning ran after epochs {sorted(pruned)}, expected 1, 2, 3")
    if not pruned[3] < DENSE_HEADS:
        fail(f"{mode}: no head was removed ({DENSE_HEADS} -> {pruned[3]})")
    for e in (1, 2, 3):
        held = sum(active_heads(f"{d}/checkpoint{e}.pt")[1])
        if held != pruned[e]:
            fail(f"{mode}: checkpoint{e}.pt holds {held} heads, pruning left {pruned[e]}")
    if f"(epoch 3 @ {stop} updates)" not in logs[2]:
        fail(f"{mode}: the third run did not resume from the --max-update checkpoint")
    losses = [float(x) for log in logs for x in re.findall(r"\| train \| epoch \d+ \| loss ([\-\w.]+)", log)]
    if len(losses) < 3 or not all(math.isfinite(x) for x in losses):
        fail(f"{mode}: end-of-epoch training losses {losses}")
    skipped = sum(log.count("gradient overflow detected") for log in logs)
    print(f"OK   {mode}: heads {DENSE_HEADS} -> {pruned[1]} -> {pruned[2]} -> {pruned[3]} (checkpoints agree), "
          f"train loss per epoch {losses}, resumed at update {stop}, {skipped} fp16-overflow steps skipped")


def check_sparse(mode: str, d: str) -> None:
    """--np-target-sparsity 50 in the penalty mode: finalize counts 50 <= S <= 50.5, no "was not
    reached" warning, finite losses, the checkpoint's weights hold the zeros the log reports."""
    from neuroprune_fairseq.commands.finalize import finalize
    from neuroprune_fairseq.fairseq_adapter.checkpoints import read_state

    log = open(f"{d}.log").read()
    if "mode penalty, proximal metric optimizer" not in log:
        fail(f"sparse {mode}: the target sparsity did not start in the penalty mode with Adam's metric")
    if "was not reached" in log:
        fail(f"sparse {mode}: the run says the target was not reached")
    losses = [float(x) for x in re.findall(r"\| train \| epoch \d+ .*?\| loss ([\-\w.]+)", log)]
    if len(losses) != 3 or not all(math.isfinite(x) for x in losses):
        fail(f"sparse {mode}: end-of-epoch training losses {losses}")
    last = [line for line in log.splitlines() if "| train | epoch 003" in line][0]
    logged = float(re.search(r"\| sparsity ([\d.]+)", last).group(1))
    cut = float(re.search(r"\| cut_sparsity ([\d.]+)", last).group(1))
    sd = read_state(f"{d}/checkpoint_last.pt")["model"]
    mats = [v for k, v in sd.items() if k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight",
                                                    "fc1.weight", "fc2.weight"))]
    ckpt = 100.0 * sum(int((v == 0).sum()) for v in mats) / sum(v.numel() for v in mats)
    info = finalize(f"{d}/checkpoint_last.pt", f"{d}/final.pt", 0.0, "bin", overwrite=True)
    if not 50.0 <= info["sparsity"] <= 50.5:
        fail(f"sparse {mode}: finalize counts {info['sparsity']:.2f}% (target 50)")
    if abs(ckpt - logged) > 0.2:  # the log's count is epoch 3's average: the zeros are fixed after the ramp
        fail(f"sparse {mode}: the checkpoint's weights hold {ckpt:.2f}% zeros, the log says {logged:.2f}%")
    print(f"OK   sparse {mode}: finalized sparsity {info['sparsity']:.2f}% (checkpoint zeros {ckpt:.2f}%, "
          f"logged {logged:.2f}%, cut made {cut:.2f} points), train loss per epoch {losses}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="step", required=True)
    sub.add_parser("data").add_argument("--cpu", action="store_true", help="no GPU needed (a dry run of the script)")
    sub.add_parser("updates-per-epoch").add_argument("checkpoint")
    h = sub.add_parser("heads")
    h.add_argument("mode")
    h.add_argument("dir")
    h.add_argument("stop", type=int)
    s = sub.add_parser("sparse")
    s.add_argument("mode")
    s.add_argument("dir")
    a = p.parse_args(argv)
    if a.step == "data":
        write_data(a.cpu)
    elif a.step == "updates-per-epoch":
        from neuroprune_fairseq.fairseq_adapter.checkpoints import read_state

        print(read_state(a.checkpoint)["optimizer_history"][-1]["num_updates"])
    elif a.step == "heads":
        check_heads(a.mode, a.dir, a.stop)
    else:
        check_sparse(a.mode, a.dir)


if __name__ == "__main__":
    main()
