"""The recipes' model and schedule presets, each written once.

The Multi30k model (``neuroprune_multi30k_cpu``, shared embeddings, Adam) is one list; its
post-norm CPU preset, the main job's pre-norm model and the pre-norm fine-tuning preset are built
from it. ``THETA`` is the redundancy threshold every recipe fine-tunes with (the task's own
``--np-theta`` default is the same 0.2).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

#: --np-theta of every NeuroPrune / l1 fine-tuning a recipe runs
THETA = 0.2

MULTI30K_ARCH = ["--arch", "neuroprune_multi30k_cpu", "--share-all-embeddings"]
ADAM = ["--optimizer", "adam", "--adam-betas", "(0.9,0.98)"]


def inverse_sqrt(lr, warmup) -> List[str]:
    """The inverse square-root schedule at peak ``lr`` after ``warmup`` updates."""
    return ["--lr", str(lr), "--lr-scheduler", "inverse_sqrt", "--warmup-updates", str(warmup)]


#: the CPU preset (post-norm): examples/multi30k_cpu, scripts/sweep.py
MULTI30K_MODEL = [*MULTI30K_ARCH, "--dropout", "0.2", *ADAM, *inverse_sqrt("2e-3", 400), "--max-tokens", "4096",
                  "--label-smoothing", "0.1"]
#: the main job's model and optimizer (pre-norm); neuroprune-main --model-args is this, joined
MULTI30K_PRENORM_MODEL = [*MULTI30K_ARCH, "--encoder-normalize-before", "--decoder-normalize-before", "--dropout", "0.1",
                          "--label-smoothing", "0.1", *ADAM]
#: the main job's fine-tuning schedule and batch size (neuroprune-main's --ft-lr, --ft-warmup, --max-tokens defaults)
PRENORM_FT_LR, PRENORM_FT_WARMUP, PRENORM_MAX_TOKENS = 1e-3, 100, 2048
#: the shared pre-norm start (../shared/models/multi30k_de_en_prenorm, the main job's dense recipe) and the
#: fine-tuning schedule every method gets from it (issues 20/21): Adam lr 1e-3, inverse_sqrt, 100 warm-up updates
MULTI30K_PRENORM_FT = [*MULTI30K_PRENORM_MODEL, *inverse_sqrt(PRENORM_FT_LR, PRENORM_FT_WARMUP),
                       "--max-tokens", str(PRENORM_MAX_TOKENS)]
#: the paper's IWSLT14 model and fairseq's IWSLT recipe (examples/iwslt14_de_en/train_dense.sh)
IWSLT14_MODEL = [
    "--arch", "neuroprune_iwslt_de_en", "--share-decoder-input-output-embed",
    "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--clip-norm", "0.0",
    "--lr", "5e-4", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000",
    "--dropout", "0.3", "--weight-decay", "0.0001", "--label-smoothing", "0.1", "--max-tokens", "4096",
]


def recovery_target_epoch(epochs: int) -> int:
    """The default epoch after which NeuroPrune/l1 reach the head target K: E - 1 (E when E = 1),
    so the last epoch fine-tunes at K after the final merge (as DSP pipelined and Michel do after
    pruning). The main job and ``frontier_gpu.sh`` both take it from here."""
    return max(int(epochs) - 1, 1)


def plain_args(model_args: Sequence[str], max_epoch: int, init=None) -> List[str]:
    """Training without penalties or head pruning (label-smoothed cross-entropy): the dense model,
    or (``init``) the dense fine-tuned control and the fine-tuning of a pruned model."""
    start = ["--finetune-from-model", str(init)] if init is not None else []
    return [*model_args, "--criterion", "label_smoothed_cross_entropy", "--np-no-head-pruning", *start,
            "--max-epoch", str(max_epoch)]


def finetune_args(method: str, init: Path, max_epoch: int, alpha: float, beta: float, theta: float,
                  model_args: Sequence[str] = MULTI30K_MODEL, penalty_scale: str = "batch") -> List[str]:
    """NeuroPrune (penalties + epoch-end head pruning) or the paper's l1 baseline.

    The l1 baseline is the same fine-tuning with plain L1 penalties (``--np-penalty l1``)
    and the same redundancy pruning: the paper's "L1 + pruning" comparison.
    """
    crit = ["--criterion", "neuroprune_ce", "--np-alpha", str(alpha), "--np-beta", str(beta),
            "--np-penalty-scale", penalty_scale]
    if method == "l1":
        crit += ["--np-penalty", "l1"]
    elif method != "neuroprune":
        raise ValueError(f"unknown method {method}")
    return [*model_args, *crit, "--np-theta", str(theta), "--finetune-from-model", str(init),
            "--max-epoch", str(max_epoch)]
