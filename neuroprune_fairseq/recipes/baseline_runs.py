"""What the GLUE runner's baselines (:mod:`.glue_baselines`) share: a Trainer phase at another
epoch count, the timed evaluation of the final model, the result row, the checks of the
runner's targets (K heads, S percent) that fail before anything trains.

The row has the fields of the runner's NeuroPrune row (``recipes/glue.py``) that a baseline
can fill: the task metrics, ``before`` (the dense model's metrics before any training),
``heads_kept`` / ``heads_dense``, ``sparsity`` (percent of the dense model's attention + MLP
matrix weights that are exactly zero or removed in the evaluated model,
:func:`neuroprune_fairseq.core.sparsity.sparsity_report` over :func:`~neuroprune_fairseq.hf.pruning.matrices`
against :func:`~neuroprune_fairseq.hf.pruning.dense_matrix_count` taken on the dense model
before pruning), ``train_time_s`` (every training phase), ``eval_examples_per_s`` and the
run's settings; each baseline adds its own fields.
"""
import dataclasses
import math
import os
import time
from typing import Callable, Dict, Optional, Tuple


__all__ = ["phase_args", "train_phase", "steps_of", "evaluate", "dense_count", "sparsity_of", "base_row",
           "check_heads_target", "check_sparsity_target", "check_head_sites"]


def phase_args(targs, epochs: float):
    """The runner's ``TrainingArguments`` with ``num_train_epochs=epochs`` (everything else kept)."""
    return dataclasses.replace(targs, num_train_epochs=float(epochs))


def train_phase(trainer) -> Tuple[float, list]:
    """``trainer.train()``; returns ``(seconds, per-log losses)``."""
    t0 = time.time()
    trainer.train()
    return time.time() - t0, [h["loss"] for h in trainer.state.log_history if "loss" in h]


def steps_of(trainer) -> int:
    """Optimizer steps the trainer's run will take (the Trainer's own ``max_steps`` arithmetic)."""
    per_epoch = max(len(trainer.get_train_dataloader()) // max(trainer.args.gradient_accumulation_steps, 1), 1)
    return int(math.ceil(trainer.args.num_train_epochs * per_epoch))


def evaluate(model, dev_ds, collator, targs, task, predict: Callable) -> Tuple[Dict[str, float], float, object]:
    """``(metrics, dev examples per second, the Trainer)`` of ``model`` with the runner's ``predict``
    (``predict(trainer, dataset, task) -> (preds, labels)``) through a plain Trainer."""
    from transformers import Trainer

    from ..hf.glue import compute_metrics

    trainer = Trainer(model=model.eval(), args=targs, data_collator=collator)
    t0 = time.time()
    preds, labels = predict(trainer, dev_ds, task)
    return compute_metrics(task, preds, labels), len(dev_ds) / max(time.time() - t0, 1e-9), trainer


def dense_count(model) -> int:
    """The dense model's attention + MLP matrix weights (take it before pruning: CoFi's hidden
    dimension removal narrows what :func:`~neuroprune_fairseq.hf.pruning.dense_matrix_count`
    sees afterwards)."""
    from ..hf.pruning import dense_matrix_count

    return dense_matrix_count(model)


def sparsity_of(model, dense: int):
    """:class:`~neuroprune_fairseq.core.sparsity.SparsityReport` of ``model``'s matrices against ``dense``."""
    from ..core.sparsity import sparsity_report
    from ..hf.pruning import matrices

    return sparsity_report(matrices(model), dense)


def base_row(args, task, method: str, metrics: dict, before: dict, model, dense: int,
             heads_kept: int, train_time: float, eval_speed: float, train_ds, dev_ds, losses) -> dict:
    """The row fields a baseline shares with the runner's NeuroPrune row (see the module doc)."""
    import torch

    from ..hf.pruning import heads_summary

    sp = sparsity_of(model, dense)
    model_path = getattr(args, "model", None) or ""
    return {
        "task": task.name, "method": method, **{k: round(v, 4) for k, v in metrics.items()},
        "before": {k: round(v, 4) for k, v in before.items()}, "seed": getattr(args, "seed", None),
        "train_loss_last_epoch": round(losses[-1], 4) if losses else None,
        "heads_kept": int(heads_kept), "heads_dense": heads_summary(model)[1],
        "sparsity": round(sp.sparsity, 3), "matrix_weights_present": sp.present, "matrix_weights_zero": sp.zero,
        "matrix_weights_dense": sp.dense, "train_time_s": round(train_time, 1),
        "eval_examples_per_s": round(eval_speed, 1),
        "train_samples": len(train_ds), "dev_samples": len(dev_ds), "epochs": getattr(args, "epochs", None),
        **{k: getattr(args, k, None) for k in ("lr", "batch_size", "max_seq_length", "lr_scheduler", "warmup_ratio",
                                               "max_grad_norm", "group_by_length")},
        "model": os.path.basename(os.path.normpath(model_path)) if os.path.isdir(model_path) else model_path,
        "threads": torch.get_num_threads(),
    }


def check_head_sites(model, method: str) -> int:
    """The model's head count, or a ValueError naming the fix when its family has no
    attention table (no head gates, no head removal)."""
    from ..hf.roles import attention_sites

    try:
        sites = attention_sites(model)
    except (ValueError, KeyError) as e:
        raise ValueError(f"--method {method}: no head gates for {type(model).__name__} ({e}); use a model of a family "
                         "in neuroprune_fairseq.hf.roles.FAMILIES (BERT family, OPT, T5, ...)") from e
    if not sites:
        raise ValueError(f"--method {method}: {type(model).__name__} has no attention module to gate; use a model of "
                         "a family in neuroprune_fairseq.hf.roles.FAMILIES")
    return sum(s.num_heads for s in sites)


def check_heads_target(args, model, method: str) -> int:
    """K (``args.np_target_heads``, the runner's head target) in [1, heads of the model]."""
    from ..hf.dsp import check_k

    total = check_head_sites(model, method)
    k = getattr(args, "np_target_heads", None)
    if not k:
        raise ValueError(f"--method {method} needs a head target: pass --np-target-heads K (1 <= K <= {total})")
    try:
        return check_k(k, total)
    except ValueError as e:
        raise ValueError(f"--np-target-heads: {e}") from e


def check_sparsity_target(args) -> float:
    """S (``args.np_target_sparsity``, percent) in [0, 100), as CoFi's fraction S / 100."""
    s: Optional[float] = getattr(args, "np_target_sparsity", None)
    if s is None:
        raise ValueError("--method cofi needs a target: pass --np-target-sparsity S (percent, 0 <= S < 100)")
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s < 100:
        raise ValueError(f"--np-target-sparsity must be a percent S with 0 <= S < 100 (e.g. 50), got {s!r}")
    return float(s) / 100.0
