"""The paper's GLUE baselines for the runner (``scripts/run_glue.py --method dsp|michel|cofi``):
DSP joint and Michel et al. when varying heads (Fig. 5), CoFi when varying sparsity (Fig. 4).

Each ``run_*`` takes what ``recipes/glue.py`` builds (the model, the encoded train / dev sets,
the collator, its ``TrainingArguments``, its args namespace, the task and its ``predict``) and
returns a :class:`BaselineRun`: the result row (:func:`.baseline_runs.base_row`'s fields plus
the method's own), the evaluated model (pruned in place) and the Trainer that evaluated it. Bad
targets or an unsupported family raise a ValueError naming the fix before anything trains.

* :func:`run_dsp`    -- DSP joint (Li et al. 2021): head gates (:func:`~neuroprune_fairseq.hf.dsp.attach_head_gates`)
  and weights trained together by :class:`~neuroprune_fairseq.hf.baseline_trainers.DSPTrainer`
  for the runner's ``--epochs`` (its default 3 is DSP's joint 3 epochs), gate AdamW at
  ``dsp_gate_lr`` (default 0.2, DSP's ``--pruning-lr``), temperature 0.1 -> 1e-8 over the run;
  then the hard top-K (:func:`~neuroprune_fairseq.hf.dsp.dsp_topk_`) and the pruned model is
  evaluated as is (DSP joint does not fine-tune after the top-K).
* :func:`run_michel` -- Michel et al. (2019): importance ``sum |dL/d xi_h|`` scored on a
  *fine-tuned* model, as the paper (it prunes fine-tuned BERT): the runner's model has a fresh
  classifier, whose loss gradients say little about the heads. So ``michel_dense_epochs``
  (default 1; 0 scores the pre-trained model) epochs of dense fine-tuning, the importance over
  the training batches (``michel_batches``, default every batch of one pass), the top-K kept
  (:func:`~neuroprune_fairseq.hf.dsp.prune_to_top_k_`), then plain fine-tuning for the runner's
  ``--epochs``. The row's ``michel_dense_epochs`` says what the scoring cost on top.
* :func:`run_cofi`   -- CoFi (Xia et al. 2022), target S percent (``--np-target-sparsity``,
  CoFi's fraction S / 100). The paper on small sets: 100 epochs of pruning (the first 4 dense,
  CoFi's ``prepruning_finetune_epochs``; the target ramps over the next 20,
  ``lagrangian_warmup_epochs``), then 20 epochs of fine-tuning the pruned model. Scaled here:
  CoFi gets ``cofi_epochs`` epochs in all (default: the runner's ``--epochs``, what NeuroPrune
  gets; pass more to give it more), ``cofi_finetune_epochs`` of them (default 20 % of the total,
  about the paper's 20 of 120) fine-tune the pruned model, the rest prune with
  :class:`~neuroprune_fairseq.hf.baseline_trainers.CoFiTrainer`: the first 4 % of the pruning
  steps dense (``cofi_prepruning_share``), the target ramping over the next 20 %
  (``cofi_warmup_share``), the masks' learning rate ``cofi_reg_lr`` (0.01, CoFi's). Then
  :func:`~neuroprune_fairseq.hf.cofi_prune.apply_cofi_masks_` and fine-tuning at the runner's lr.
  Sparsity is counted against the dense model's matrix weights (hidden-dimension removal
  narrows the matrices, so the pruned model's own "dense" count would be smaller).

The optional settings are read from ``args`` with ``getattr`` (the runner may add them as
``--dsp-gate-lr`` etc.); their defaults are above.
"""
from typing import NamedTuple


from .baseline_runs import (base_row, check_heads_target, check_sparsity_target, dense_count, evaluate, phase_args,
                            steps_of, train_phase)

__all__ = ["BaselineRun", "run_dsp", "run_michel", "run_cofi", "BASELINES", "add_baseline_args", "check_baseline_args"]

#: the runner's options of each baseline (None: the function's default, see its docstring)
OPTIONS = {
    "dsp": [("--dsp-gate-lr", float, "DSP's gate learning rate (--pruning-lr; default 0.2)")],
    "michel": [("--michel-dense-epochs", float, "epochs of dense fine-tuning before the importance (default 1; 0: "
                                                 "score the pre-trained model)"),
               ("--michel-batches", int, "training batches the importance is summed over (default: one pass)")],
    "cofi": [("--cofi-epochs", float, "CoFi's total epochs (default: --epochs, NeuroPrune's budget; more gives it more)"),
             ("--cofi-finetune-epochs", float, "of them, epochs fine-tuning the pruned model (default 20%%)"),
             ("--cofi-reg-lr", float, "learning rate of the masks and the Lagrange multipliers (default 0.01, CoFi's)")],
}


def add_baseline_args(p) -> None:
    g = p.add_argument_group("baselines (--method dsp | michel | cofi; K: --np-target-heads, S: --np-target-sparsity)")
    for opts in OPTIONS.values():
        for flag, typ, help_ in opts:
            g.add_argument(flag, type=typ, default=None, help=help_)


def check_baseline_args(args) -> None:
    """Before anything loads: each baseline's own options only with that baseline, its target given."""
    for method, opts in OPTIONS.items():
        for flag, _typ, _help in opts:
            if getattr(args, flag[2:].replace("-", "_"), None) is not None and args.method != method:
                raise ValueError(f"{flag} is an option of --method {method}, not of --method {args.method}: drop it")
    if args.method in ("dsp", "michel") and not getattr(args, "np_target_heads", 0):
        raise ValueError(f"--method {args.method} needs a head target: pass --np-target-heads K")
    if args.method == "cofi":
        check_sparsity_target(args)
        if getattr(args, "np_target_heads", 0):
            raise ValueError("--method cofi takes a sparsity target (--np-target-sparsity), not --np-target-heads")


class BaselineRun(NamedTuple):
    result: dict  # the row (see the module doc)
    model: object  # the evaluated model, pruned in place (the one passed in)
    trainer: object  # the plain Trainer that evaluated it (for the runner's finish_run)


def _opt(args, name, default):
    v = getattr(args, name, None)
    return default if v is None else v


def _dense_before(model, dev_ds, collator, targs, task, predict):
    return evaluate(model, dev_ds, collator, targs, task, predict)[0], dense_count(model)


def run_dsp(model, train_ds, dev_ds, collator, targs, args, task, predict) -> BaselineRun:
    """DSP joint to exactly K = ``args.np_target_heads`` heads; see the module doc."""
    from ..hf.baseline_trainers import DSPTrainer
    from ..hf.dsp import attach_head_gates, dsp_topk_

    k = check_heads_target(args, model, "dsp")
    gate_lr = float(_opt(args, "dsp_gate_lr", 0.2))
    before, dense = _dense_before(model, dev_ds, collator, targs, task, predict)
    gates = attach_head_gates(model)
    trainer = DSPTrainer(model=model, args=targs, train_dataset=train_ds, data_collator=collator, gates=gates, k=k,
                         gate_lr=gate_lr)
    seconds, losses = train_phase(trainer)
    temperature = trainer.temperature()
    report = dsp_topk_(model, gates, k)
    metrics, speed, ev = evaluate(model, dev_ds, collator, targs, task, predict)
    row = base_row(args, task, "dsp", metrics, before, model, dense, report["heads_kept"], seconds, speed,
                   train_ds, dev_ds, losses)
    row.update({"target_heads": k, "dsp_epochs": targs.num_train_epochs, "dsp_gate_lr": gate_lr,
                "dsp_steps": trainer.state.global_step, "dsp_final_temperature": temperature,
                "dsp_gate_skips": trainer.gate_skips, "heads_per_module": report["heads_per_module"],
                "empty_modules": report["empty_modules"]})
    return BaselineRun(row, model, ev)


def run_michel(model, train_ds, dev_ds, collator, targs, args, task, predict) -> BaselineRun:
    """Michel et al.: dense fine-tuning, importance, keep the top K = ``args.np_target_heads``,
    fine-tune; see the module doc."""
    from transformers import Trainer

    from ..hf.dsp import michel_importance, prune_to_top_k_

    k = check_heads_target(args, model, "michel")
    dense_epochs = float(_opt(args, "michel_dense_epochs", 1))
    max_batches = _opt(args, "michel_batches", 0)
    if dense_epochs < 0 or int(max_batches) < 0:
        raise ValueError(f"michel_dense_epochs and michel_batches must be >= 0, got {dense_epochs}, {max_batches}")
    before, dense = _dense_before(model, dev_ds, collator, targs, task, predict)
    seconds = 0.0
    if dense_epochs > 0:
        seconds, _ = train_phase(Trainer(model=model, args=phase_args(targs, dense_epochs), train_dataset=train_ds,
                                         data_collator=collator))
    scorer = Trainer(model=model, args=targs, train_dataset=train_ds, data_collator=collator)
    device = next(model.parameters()).device

    def batches():
        for i, b in enumerate(scorer.get_train_dataloader()):
            if max_batches and i >= int(max_batches):
                return
            yield {name: v.to(device) for name, v in b.items()}

    import time

    t0 = time.time()
    scores = michel_importance(model, batches())
    score_time = time.time() - t0
    report = prune_to_top_k_(model, scores, k)
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, data_collator=collator)
    ft_seconds, losses = train_phase(trainer)
    metrics, speed, ev = evaluate(model, dev_ds, collator, targs, task, predict)
    row = base_row(args, task, "michel", metrics, before, model, dense, report["heads_kept"],
                   seconds + score_time + ft_seconds, speed, train_ds, dev_ds, losses)
    row.update({"target_heads": k, "michel_dense_epochs": dense_epochs, "michel_batches": int(max_batches) or None,
                "michel_score_time_s": round(score_time, 1), "finetune_epochs": targs.num_train_epochs,
                "heads_per_module": report["heads_per_module"], "empty_modules": report["empty_modules"]})
    return BaselineRun(row, model, ev)


def cofi_schedule(args) -> dict:
    """CoFi's scaled schedule from ``args`` (see the module doc): epochs in all, of them
    pruning and fine-tuning, and the shares of the pruning steps."""
    total = float(_opt(args, "cofi_epochs", args.epochs))
    finetune = float(_opt(args, "cofi_finetune_epochs", 0.2 * total))
    pre, warm = float(_opt(args, "cofi_prepruning_share", 0.04)), float(_opt(args, "cofi_warmup_share", 0.2))
    if not total > 0 or not 0 <= finetune < total:
        raise ValueError(f"CoFi needs cofi_epochs > 0 and 0 <= cofi_finetune_epochs < cofi_epochs (a pruning phase "
                         f"is left), got {total} and {finetune}; pass --cofi-epochs larger than --cofi-finetune-epochs")
    if not (0 <= pre < 1 and 0 <= warm <= 1 and pre + warm <= 1):
        raise ValueError(f"CoFi's prepruning and warm-up shares must be in [0, 1] and sum to <= 1, got {pre}, {warm}")
    return {"total": total, "prune": total - finetune, "finetune": finetune, "prepruning_share": pre,
            "warmup_share": warm, "reg_lr": float(_opt(args, "cofi_reg_lr", 0.01))}


def run_cofi(model, train_ds, dev_ds, collator, targs, args, task, predict) -> BaselineRun:
    """CoFi to target ``args.np_target_sparsity`` percent; see the module doc."""
    from transformers import Trainer

    from ..hf.baseline_trainers import CoFiTrainer
    from ..hf.cofi import CoFiMasks
    from ..hf.cofi_prune import apply_cofi_masks_

    target = check_sparsity_target(args)
    plan = cofi_schedule(args)
    masks = CoFiMasks(model, target=target)  # raises for a family CoFi has no table for
    before, dense = _dense_before(model, dev_ds, collator, targs, task, predict)
    trainer = CoFiTrainer(model=model, args=phase_args(targs, plan["prune"]), train_dataset=train_ds,
                          data_collator=collator, masks=masks, reg_lr=plan["reg_lr"])
    steps = steps_of(trainer)
    trainer.prepruning_steps = int(round(plan["prepruning_share"] * steps))
    masks.warmup_steps = int(round(plan["warmup_share"] * steps))
    seconds, _ = train_phase(trainer)
    lagrangian = dict(trainer.last_lagrangian)
    report = apply_cofi_masks_(model, masks)
    ft_seconds, losses = 0.0, []
    if plan["finetune"] > 0:
        ft_seconds, losses = train_phase(Trainer(model=model, args=phase_args(targs, plan["finetune"]),
                                                 train_dataset=train_ds, data_collator=collator))
    metrics, speed, ev = evaluate(model, dev_ds, collator, targs, task, predict)
    row = base_row(args, task, "cofi", metrics, before, model, dense, sum(report["heads_per_layer"]),
                   seconds + ft_seconds, speed, train_ds, dev_ds, losses)
    row.update({"np_target_sparsity": getattr(args, "np_target_sparsity"), "cofi_epochs": plan["total"],
                "cofi_prune_epochs": plan["prune"], "cofi_finetune_epochs": plan["finetune"],
                "cofi_steps": steps, "cofi_prepruning_steps": trainer.prepruning_steps,
                "cofi_warmup_steps": masks.warmup_steps, "cofi_reg_lr": plan["reg_lr"],
                "cofi_prune_time_s": round(seconds, 1), "cofi_finetune_time_s": round(ft_seconds, 1),
                **{f"cofi_{k}": round(v, 5) for k, v in lagrangian.items()},
                **{k: report[k] for k in ("heads_per_layer", "ffn_dims_per_layer", "hidden_dims",
                                          "attention_layers_removed", "ffn_layers_removed")}})
    return BaselineRun(row, model, ev)


#: ``--method`` -> run function (all take the same arguments)
BASELINES = {"dsp": run_dsp, "michel": run_michel, "cofi": run_cofi}
