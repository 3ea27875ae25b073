#!/usr/bin/env python
"""Frontier sweep driver: one fine-tuning run per grid point, resumable, JSON-lines results.

    python scripts/sweep.py --config examples/multi30k_cpu/sweep.json --data-dir PATH/multi30k \
        --work-dir /tmp/np_sweep --results results/multi30k_sweep.jsonl

Grid from a JSON/YAML config (see examples/multi30k_cpu/sweep.json) and/or flags
(``--method neuroprune --alpha 0.05 0.1 --beta 0.1 --theta 0.2 0.3``: the cross product;
``--proximal --target-sparsity 25 50`` add ``--np-proximal`` / one point per target sparsity,
as the grid keys "proximal" and "target_sparsity" do, see examples/multi30k_cpu/sweep_sparsity.json).
Every point: fine-tune from the dense checkpoint (``neuroprune`` or ``l1``), finalize
(``python -m neuroprune_fairseq.commands.finalize``), evaluate the finalised model (beam 5, all
test sentences; a point whose hypothesis count differs from the reference count fails).
A point already in the results file (same method/alpha/beta/theta/epochs/dense init) is
skipped; an interrupted point resumes from its ``checkpoint_last.pt``.

Datasets: ``multi30k`` (a raw folder -> sentencepiece 8k, prepared here by ``neuroprune-prepare``'s
code for ``--src-lang X --tgt-lang Y``, default de en: Multi30k's layout or any train/valid/test.{X,Y}) and ``iwslt14``
(an already prepared folder from examples/iwslt14_de_en/prepare.sh: ``--data-dir`` is its
output, holding ``bin/``, ``tok/test.en`` and ``raw/test.en``).
"""
import argparse
import itertools
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

from neuroprune_fairseq.fairseq_adapter.checkpoints import epochs_trained
from neuroprune_fairseq.fairseq_adapter.sparsify_state import penalty_points
from neuroprune_fairseq.recipes import datafiles, extra_sets, preparation, presets, runner, scoring, steps, sweeps

DEFAULTS = {
    "dataset": "multi30k",
    "dense_epochs": 15,
    "finetune_epochs": 3,
    "threshold": 1e-3,
    "penalty_scale": "batch",  # --np-penalty-scale of every neuroprune/l1 point
    "include_dense": True,
    "model_args": None,  # None: presets.MULTI30K_MODEL
    "target_start": None,  # --np-target-start of the target-sparsity points (None: the option's default)
    "target_end": None,  # --np-target-end (None: the option's default, 0.75)
    "grid": [],
}


def load_config(path):
    if not path:
        return {}
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


def expand(grid):
    """[{"method": m, "alpha": [..], "beta": [..], "theta": [..]}] -> list of points.

    Optional per entry: "proximal": true (``--np-proximal``) and "target_sparsity": [S, ..]
    (``--np-target-sparsity S``, one point per S)."""
    pts = []
    for g in grid:
        if g["method"] == "dense-ft":  # the dense fine-tuned control: one point
            pts.append({"method": "dense-ft", "alpha": None, "beta": None, "theta": None})
            continue
        vals = [g[k] if isinstance(g[k], list) else [g[k]] for k in ("alpha", "beta", "theta")]
        ts = g.get("target_sparsity")
        ts = [None] if ts is None else (ts if isinstance(ts, list) else [ts])
        for a, b, t, s in itertools.product(*vals, ts):
            pt = {"method": g["method"], "alpha": float(a), "beta": float(b), "theta": float(t)}
            if g.get("proximal"):
                pt["proximal"] = True
            if s is not None:
                pt["target_sparsity"] = float(s)
                pt["target_mode"] = g.get("target_mode", "penalty")
            if g.get("proximal") or s is not None:
                pt["prox_metric"] = g.get("prox_metric", "optimizer")
            for k in ("target_heads", "target_epoch"):
                if g.get(k):
                    pt[k] = int(g[k])
            pts.append(pt)
    return pts


def sparsify_args(pt, cfg):
    """The fine-tuning flags of a point's --np-proximal / --np-target-sparsity (none if unset)."""
    out = ["--np-proximal"] if pt.get("proximal") else []
    if pt.get("prox_metric"):
        out += ["--np-prox-metric", pt["prox_metric"]]
    for k in ("target_heads", "target_epoch"):
        if pt.get(k):
            out += [f"--np-{k.replace('_', '-')}", str(pt[k])]
    if pt.get("target_sparsity") is not None:
        out += ["--np-target-sparsity", f"{pt['target_sparsity']:g}"]
        if pt.get("target_mode"):
            out += ["--np-target-mode", pt["target_mode"]]
        for k in ("target_start", "target_end"):
            if cfg.get(k) is not None:
                out += [f"--np-{k.replace('_', '-')}", str(cfg[k])]
    return out


def key(row):
    # rows written before --np-penalty-scale existed were trained with the per-token scale
    scale = row.get("penalty_scale", "token") if row["method"] in ("neuroprune", "l1") else None
    # rows written before --np-target-mode existed were made by the cut
    mode = row.get("target_mode", "cut") if row.get("target_sparsity") is not None else None
    # ... and with the proximal step at lr (--np-prox-metric euclidean)
    metric = row.get("prox_metric", "euclidean") if (row.get("proximal") or mode) else None
    return (row["method"], row.get("alpha"), row.get("beta"), row.get("theta"), row.get("finetune_epochs"),
            row.get("dense_init"), scale, bool(row.get("proximal", False)), row.get("target_sparsity"), mode,
            row.get("target_heads"), row.get("target_epoch"), metric)


def done_keys(results):
    return sweeps.done_keys(results, key)


def evaluate(cfg, prep, ckpt, logfile, also=()):
    """The test split's scores; with ``also`` (--also-score, multi30k): ``bleu_sets`` {set name: BLEU} too."""
    if cfg["dataset"] != "multi30k":
        return scoring.evaluate_iwslt(prep, ckpt, logfile=logfile)
    per = scoring.score_sets(prep, ckpt, ["test", *also], lambda sub: logfile if sub == "test" else
                             str(logfile).replace(".generate", f".generate.{sub}"))
    return {**per[next(iter(per))], **({"bleu_sets": {n: e["bleu"] for n, e in per.items()}} if also else {})}


STAT_KEYS = ("heads_kept", "heads_dense", "heads_per_module", "mlp_neurons_kept", "mlp_neurons_dense", "sparsity",
             "params", "params_dense", "flops_per_token", "flops_per_token_dense", "flops_ratio",
             # core.structure.structure_report of the finalised model
             "input_groups_zeroed", "input_groups", "mlp_neurons_dead", "mlp_neurons", "fc2_rows_zero", "fc2_rows",
             "structured_share", "structured_share_beyond_heads", "mlp_degree_sd", "blocks_1x4_at_most_2_nonzero")




def run_dense(ctx, pt):
    """The dense model itself, not trained here: (run folder, its training seconds, no log)."""
    if ctx.init:  # never write next to a shared checkpoint
        run_dir = ctx.work / "runs" / ctx.dense_dir.name / "dense"
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir, ctx.dense_wall, None
    return ctx.dense_dir, ctx.dense_wall, None


def run_dense_ft(ctx, pt):
    """The control: the same fine-tuning epochs and schedule, no penalty."""
    run_dir = ctx.work / "runs" / ctx.dense_dir.name / f"dense-ft_e{ctx.fe}"
    log = ctx.work / "logs" / f"{ctx.dense_dir.name}.{run_dir.name}.log"
    return run_dir, steps.train(ctx.bin_dir, run_dir, presets.plain_args(ctx.model_args, ctx.fe, ctx.dense_init), log), log


def run_penalised(ctx, pt):
    """NeuroPrune or l1 fine-tuning (the point's --np-proximal / --np-target-* flags too)."""
    cfg, fe = ctx.cfg, ctx.fe
    tag = f"{pt['method']}_a{pt['alpha']:g}_b{pt['beta']:g}_t{pt['theta']:g}_e{fe}"
    tag += "_token" if cfg["penalty_scale"] == "token" else ""
    tag += "_prox" if pt.get("proximal") else ""
    tag += f"_s{pt['target_sparsity']:g}" if pt.get("target_sparsity") is not None else ""
    tag += f"_{pt['target_mode']}" if pt.get("target_mode") else ""
    tag += "_euclid" if pt.get("prox_metric") == "euclidean" else ""
    tag += f"_k{pt['target_heads']}" if pt.get("target_heads") else ""
    run_dir = ctx.work / "runs" / ctx.dense_dir.name / tag
    log = ctx.work / "logs" / f"{ctx.dense_dir.name}.{tag}.log"
    args = presets.finetune_args(pt["method"], Path(ctx.dense_init), fe, pt["alpha"], pt["beta"], pt["theta"],
                                 ctx.model_args, cfg["penalty_scale"]) + sparsify_args(pt, cfg)
    return run_dir, steps.train(ctx.bin_dir, run_dir, args, log), log


#: every method: how one point trains -> (run folder, training seconds, training log)
METHODS = {"dense": run_dense, "dense-ft": run_dense_ft, "neuroprune": run_penalised, "l1": run_penalised}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON or YAML sweep config")
    p.add_argument("--data-dir", help="multi30k: raw folder (default $NEUROPRUNE_DATA/multi30k); iwslt14: prepared folder")
    p.add_argument("--src-lang", default="de", help="multi30k: source language of the raw files (any pair neuroprune-prepare reads)")
    p.add_argument("--tgt-lang", default="en", help="multi30k: target language")
    p.add_argument("--work-dir", default=os.environ.get("NEUROPRUNE_WORK", "/tmp/neuroprune_sweep"))
    p.add_argument("--results", default="results/sweep.jsonl")
    p.add_argument("--dense-dir", help="use this trained dense save-dir (its checkpoint_last.pt) instead of training one")
    p.add_argument("--init", help="fine-tune from this dense checkpoint (e.g. $NEUROPRUNE_MODELS/multi30k_de_en_prenorm/"
                   "checkpoint_dense_prenorm_e8.pt); needs --prep-dir, the preparation it was trained on")
    p.add_argument("--prep-dir", help="multi30k: an existing neuroprune-prepare folder (bin/, raw/) instead of preparing --data-dir")
    p.add_argument("--dense-epochs", type=int)
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--threshold", type=float)
    p.add_argument("--penalty-scale", choices=["batch", "token"], help="--np-penalty-scale of the fine-tuning runs (default: batch)")
    p.add_argument("--method", choices=["neuroprune", "l1"], help="with --alpha/--beta/--theta: add this grid")
    p.add_argument("--alpha", type=float, nargs="+")
    p.add_argument("--beta", type=float, nargs="+")
    p.add_argument("--theta", type=float, nargs="+")
    p.add_argument("--proximal", action="store_true", help="with --method: --np-proximal")
    p.add_argument("--target-sparsity", type=float, nargs="+", help="with --method: one point per --np-target-sparsity S")
    p.add_argument("--no-dense", action="store_true", help="do not evaluate/record the dense model")
    p.add_argument("--max-points", type=int, help="stop after this many new points")
    p.add_argument("--also-score", default="", help="multi30k: further splits of the prep folder scored like the test "
                   "set, comma-separated (valid, an --extra-test set, all); rows get bleu_sets {set name: BLEU}")
    p.add_argument("--dry-run", action="store_true", help="print the points and exit")
    a = p.parse_args(argv)

    cfg = dict(DEFAULTS)
    cfg.update(load_config(a.config))
    for k in ("dense_epochs", "finetune_epochs", "threshold", "penalty_scale"):
        if getattr(a, k) is not None:
            cfg[k] = getattr(a, k)
    if a.no_dense:
        cfg["include_dense"] = False
    if a.method:
        cfg["grid"] = list(cfg["grid"]) + [{"method": a.method, "alpha": a.alpha or [0.05], "beta": a.beta or [0.1],
                                            "theta": a.theta or [presets.THETA], "proximal": a.proximal,
                                            "target_sparsity": a.target_sparsity}]
    points = expand(cfg["grid"])
    model_args = cfg["model_args"] or presets.MULTI30K_MODEL
    work = Path(a.work_dir)
    sweep = sweeps.Sweep(Path(a.results), key)

    if a.init and not (a.prep_dir or cfg["dataset"] != "multi30k"):
        p.error("--init needs --prep-dir: the preparation (dictionaries) the checkpoint was trained on")
    if a.init and not Path(a.init).is_file():
        p.error(f"--init {a.init}: no such checkpoint file")
    if a.prep_dir:
        prep = Path(a.prep_dir).resolve()
        if not (prep / "bin").is_dir():
            p.error(f"--prep-dir {a.prep_dir} has no bin/ folder (not a neuroprune-prepare output)")
    elif cfg["dataset"] == "multi30k":
        prep = work / (f"prep_{a.src_lang}_{a.tgt_lang}" if (a.src_lang, a.tgt_lang) != ("de", "en") else "prep")
        if not a.dry_run:
            preparation.prepare(datafiles.data_dir(a.data_dir, "multi30k"), prep, a.src_lang, a.tgt_lang)
    else:
        prep = datafiles.data_dir(a.data_dir, "iwslt14_prepared")
    bin_dir = prep / "bin"
    if a.also_score and cfg["dataset"] != "multi30k":
        p.error("--also-score: multi30k (a neuroprune-prepare folder) only")
    try:  # an unknown split fails before any training
        a.also_score = [x for x in extra_sets.scored_sets(prep, a.also_score) if x != "test"] if a.also_score and not a.dry_run else []
    except ValueError as e:
        p.error(str(e))

    if a.init:
        dense_dir = Path(a.init).resolve().parent
        cfg["dense_epochs"] = epochs_trained(Path(a.init))  # what was really trained
        dense_wall = None
    elif a.dense_dir:
        dense_dir = Path(a.dense_dir)
        cfg["dense_epochs"] = epochs_trained(dense_dir / "checkpoint_last.pt")  # what was really trained
        dense_wall = json.loads((dense_dir / ".done").read_text())["train_wall_s"] if (dense_dir / ".done").exists() else None
    else:
        dense_dir = work / f"dense_e{cfg['dense_epochs']}"
        dense_wall = None
    dense_init = str(Path(a.init).resolve()) if a.init else str(dense_dir.resolve() / "checkpoint_last.pt")
    fe = cfg["finetune_epochs"]
    todo = ([{"method": "dense", "alpha": None, "beta": None, "theta": None}] if cfg["include_dense"] else []) + points
    pending = sweep.pending(todo, lambda pt: {
        **pt, "finetune_epochs": None if pt["method"] == "dense" else fe, "dense_init": dense_init,
        "penalty_scale": cfg["penalty_scale"] if pt["method"] in ("neuroprune", "l1") else None})
    if a.dry_run:
        for pt in pending:
            print(json.dumps(pt))
        return
    if not (a.dense_dir or a.init):
        dense_wall = steps.train(bin_dir, dense_dir, presets.plain_args(model_args, cfg["dense_epochs"]),
                                 work / "logs" / f"{dense_dir.name}.log")
    ctx = SimpleNamespace(work=work, dense_dir=dense_dir, dense_wall=dense_wall, init=a.init, fe=fe, bin_dir=bin_dir,
                          model_args=model_args, dense_init=dense_init, cfg=cfg)
    for n, pt in enumerate(pending):
        if a.max_points is not None and n >= a.max_points:
            break
        t0 = time.time()
        run_dir, wall, log = METHODS[pt["method"]](ctx, pt)
        fin_path = run_dir / f"final_t{cfg['threshold']:g}.pt"
        ckpt = Path(dense_init) if pt["method"] == "dense" else run_dir / "checkpoint_last.pt"
        fin = steps.finalize(ckpt, fin_path, cfg["threshold"],
                             logfile=work / "logs" / f"{run_dir.name}.finalize.log", data=bin_dir)
        ev = evaluate(cfg, prep, fin_path, work / "logs" / f"{run_dir.name}.generate.log", a.also_score)
        penalised = pt["method"] in ("neuroprune", "l1")
        row = {**pt, "finetune_epochs": None if pt["method"] == "dense" else fe, "dense_epochs": cfg.get("dense_epochs"),
               "penalty_scale": cfg["penalty_scale"] if penalised else None, **(penalty_points(log) if log else {}),
               "dense_init": dense_init, "dataset": cfg["dataset"], "threshold": cfg["threshold"],
               "bleu": ev["bleu"], "sacrebleu_signature": ev["sacrebleu_signature"],
               **{k: fin.get(k) for k in STAT_KEYS},
               "train_wall_s": None if wall is None else round(wall, 1),
               **{k: v for k, v in ev.items() if k not in ("bleu", "sacrebleu_signature")},
               "point_wall_s": round(time.time() - t0, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if not row["n_hyps_eq_n_refs"]:
            raise SystemExit(f"{pt}: {row['n_hyps']} hypotheses for {row['n_refs']} references")
        sweep.record(row, f"{pt['method']} a={pt['alpha']} b={pt['beta']} t={pt['theta']} "
                      f"prox={pt.get('proximal', False)} S={pt.get('target_sparsity')}: BLEU {row['bleu']} heads "
                      f"{row['heads_kept']}/{row['heads_dense']} sparsity {row['sparsity']}% flops ratio {row['flops_ratio']}")


if __name__ == "__main__":
    main()
