#!/usr/bin/env python
"""DSP sweep over the global head budget K: train, finalise, evaluate; JSON-lines results.

    # pipelined (DSP's second setting): gates only, one epoch, on a trained dense model
    python scripts/sweep_dsp.py --data-bin PREP/bin --pretrained DENSE/checkpoint_last.pt \
        --mode pipelined --heads 10,25,50,75,100 --epochs 1 --results results/dsp.jsonl
    # joint: weights and gates from scratch
    python scripts/sweep_dsp.py --data-bin PREP/bin --mode joint --heads 10,25,50 --epochs 15 \
        --anneal-steps 1000 --results results/dsp.jsonl
    # Michel et al. (2019) importance pruning of the same dense model, same finalisation
    python scripts/sweep_dsp.py --data-bin PREP/bin --pretrained DENSE/checkpoint_last.pt \
        --method michel --heads 10,25,50 --results results/dsp.jsonl

Every point: ``fairseq-train --task dsp_translation --criterion dsp_ce --dsp-heads K``
(resumable: fairseq restarts from the point's ``checkpoint_last.pt``), then
``python -m neuroprune_fairseq.commands.dsp_finalize`` (physical removal of the heads outside the
hard top-K of the learned logits; for ``michel``: ``python -m neuroprune_fairseq.commands.head_importance``),
then ``fairseq-generate`` (beam 5, whole test subset, ``--post-process sentencepiece`` by
default) and corpus BLEU with sacrebleu against ``--refs`` (default ``PREP/raw/test.TGT``,
the layout of ``neuroprune-prepare``; without it, fairseq's own post-processed
target lines ``T-``). A point whose hypothesis count differs from the reference count fails.
Points already in ``--results`` (same method, mode, K, epochs, init, arch, model args, T, straight-through, data) are skipped.

Row keys: method, mode, K, bleu, heads_kept, heads_per_module, sparsity, params, train_wall_s,
gen_sentences_per_s, plus flops_ratio, empty_modules, n_hyps, n_refs, ... .
"""
import argparse
import json
import os
import shlex
import time
from pathlib import Path

from neuroprune_fairseq.recipes import datafiles, presets, runner, scoring, steps, sweeps

#: the DSP task and criterion on top of steps.COMMON_TRAIN
DSP_TRAIN = ["--task", "dsp_translation", "--criterion", "dsp_ce"]
STAT_KEYS = ("heads_kept", "heads_dense", "heads_per_module", "physical_heads_per_module", "empty_modules",
             "sparsity", "params", "params_dense", "flops_ratio", "mlp_neurons_kept")


def model_args(arch: str, extra: str):
    """the recipes' Multi30k CPU recipe (Adam, inverse_sqrt, dropout 0.2, label smoothing 0.1) with ``--arch``."""
    args = list(presets.MULTI30K_MODEL)
    args[args.index("--arch") + 1] = arch
    return args + shlex.split(extra or "")


def point_key(row):
    return (row["method"], row.get("mode"), int(row["K"]), row.get("epochs"), row.get("init"), row.get("arch"),
            row.get("model_args"), row.get("anneal_steps"), row.get("straight_through"), row.get("gate_lr"), row.get("data_bin"))


def is_dsp_row(row) -> bool:
    # the file is shared with scripts/sweep.py (dense, neuroprune, l1 rows have no K)
    return row.get("method") in ("dsp", "michel") and row.get("K") is not None


def done_keys(results: Path):
    return sweeps.done_keys(results, point_key, where=is_dsp_row)


def train_point(a, k: int, run_dir: Path, logfile: Path) -> float:
    cmd = [*DSP_TRAIN, *model_args(a.arch, a.model_args), "--dsp-heads", str(k), "--dsp-mode", a.mode,
           "--max-epoch", str(a.epochs)]
    if a.anneal_steps is not None:
        cmd += ["--dsp-anneal-steps", str(a.anneal_steps)]
    if a.straight_through:
        cmd += ["--dsp-straight-through"]
    if a.gate_lr is not None:
        cmd += ["--dsp-lr", str(a.gate_lr)]
    if a.pretrained:
        cmd += ["--dsp-pretrained", str(Path(a.pretrained).resolve())]
    return steps.train(a.data_bin, run_dir, cmd, logfile)


def finalize_point(a, k: int, src: Path, out: Path, logfile: Path):
    js = out.with_suffix(".json")
    if not (out.exists() and js.exists()):
        if a.method == "dsp":
            module, args = "neuroprune_fairseq.commands.dsp_finalize", ["--path", src, "--heads", str(k)]
        else:
            module, args = "neuroprune_fairseq.commands.head_importance", [
                "--path", src, "--heads", str(k), "--subset", a.importance_subset, "--max-tokens", str(a.max_tokens)]
        args += ["--output", out, "--report", js, "--data", a.data_bin, "--empty-modules", a.empty_modules]
        wall = runner.run_module(module, args, logfile=logfile)
    else:
        wall = None
    return json.loads(js.read_text()), wall


def references(a, gen_log: Path):
    tgt = (datafiles.bin_langs(a.data_bin) or (None, None))[1]
    refs_path = Path(a.refs) if a.refs else Path(a.data_bin).resolve().parent / "raw" / f"{a.subset}.{tgt}"
    if refs_path.exists():
        return datafiles.read_lines(refs_path), str(refs_path)
    tgt = {}
    for line in gen_log.read_text().splitlines():
        if line.startswith("T-"):
            idx, *text = line.split("\t")
            tgt[int(idx[2:])] = text[0] if text else ""
    return [tgt[i] for i in sorted(tgt)], "fairseq T- lines"


def evaluate(a, ckpt: Path, gen_log: Path):
    gen = scoring.generate(Path(a.data_bin), ckpt, subset=a.subset, beam=a.beam, batch_size=a.batch_size,
                         post_process=a.post_process, logfile=gen_log)
    refs, ref_source = references(a, gen_log)
    tgt = (datafiles.bin_langs(a.data_bin) or (None, ""))[1]
    bleu, sig = scoring.sacrebleu_score(gen["hyps"], refs, trg_lang=tgt)  # raises if counts differ
    return {"bleu": round(bleu, 2), "sacrebleu_signature": sig, "refs": ref_source, "n_hyps": len(gen["hyps"]),
            "n_refs": len(refs), "gen_sentences_per_s": gen.get("sentences_per_s"), "gen_wall_s": round(gen["wall_s"], 2)}


def run_dsp(a, k: int, work: Path, cfg_hash: str):
    """DSP: train the gates (joint: and the weights), then keep the hard top-K of the logits."""
    tag = f"dsp_{a.mode}_K{k}_e{a.epochs}" + (f"_T{a.anneal_steps}" if a.anneal_steps is not None else "") \
        + ("_st" if a.straight_through else "") + (f"_lr{a.gate_lr:g}" if a.gate_lr is not None else "")
    run_dir = work / "runs" / f"{tag}_{cfg_hash}"
    wall = train_point(a, k, run_dir, work / "logs" / f"{tag}.train.log")
    fin, _ = finalize_point(a, k, run_dir / "checkpoint_last.pt", run_dir / "final.pt", work / "logs" / f"{tag}.finalize.log")
    return tag, run_dir, fin, wall


def run_michel(a, k: int, work: Path, cfg_hash: str):
    """Michel et al.: the importance pass on the dense model (its "training"), then the top-K."""
    tag = f"michel_K{k}"
    run_dir = work / "runs" / f"{tag}_{cfg_hash}"
    run_dir.mkdir(parents=True, exist_ok=True)
    fin, wall = finalize_point(a, k, Path(a.pretrained).resolve(), run_dir / "final.pt", work / "logs" / f"{tag}.finalize.log")
    return tag, run_dir, fin, wall


#: every method: how one point is made -> (tag, run folder, finalisation report, training seconds)
METHODS = {"dsp": run_dsp, "michel": run_michel}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-bin", required=True, help="fairseq-preprocess output (joined dictionary)")
    p.add_argument("--pretrained", help="trained dense checkpoint: required for --mode pipelined and --method michel; "
                                        "with --mode joint it initialises the weights (default: from scratch)")
    p.add_argument("--method", choices=list(METHODS), default="dsp")
    p.add_argument("--mode", choices=["joint", "pipelined"], default=None,
                   help="DSP mode (default: pipelined with --pretrained, joint without)")
    p.add_argument("--heads", default="10,25,50,75,100", help="comma-separated global budgets K")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: 1 pipelined, 15 joint)")
    p.add_argument("--anneal-steps", type=int, default=None,
                   help="--dsp-anneal-steps T (default: DSP's 15000 joint / 250 pipelined; for short CPU runs use ~1/3 of the updates)")
    p.add_argument("--straight-through", action="store_true", help="--dsp-straight-through")
    p.add_argument("--gate-lr", type=float, default=None, help="--dsp-lr: constant lr of the gates (DSP's --pruning-lr, 0.2 in its IWSLT recipes; default: the model's scheduled lr)")
    p.add_argument("--arch", default="neuroprune_multi30k_cpu")
    p.add_argument("--model-args", default="", help="extra fairseq-train arguments (quoted string), e.g. '--max-tokens 2048'")
    p.add_argument("--empty-modules", choices=["zero", "keep-best"], default="zero")
    p.add_argument("--importance-subset", default="valid", help="michel: data subset of the importance pass")
    p.add_argument("--max-tokens", type=int, default=4096, help="michel: batch size of the importance pass")
    p.add_argument("--subset", default="test", help="evaluation subset")
    p.add_argument("--refs", help="detokenized reference file (default: DATA_BIN/../raw/SUBSET.TGT, else fairseq's T- lines)")
    p.add_argument("--post-process", default="sentencepiece", help="fairseq-generate --post-process (sentencepiece, subword_nmt, none)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--work-dir", default=os.environ.get("NEUROPRUNE_WORK", "/tmp/neuroprune_dsp_sweep"))
    p.add_argument("--results", default="results/dsp_sweep.jsonl")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)

    if a.method == "michel" and not a.pretrained:
        p.error("--method michel needs --pretrained")
    a.mode = a.mode or ("pipelined" if a.pretrained else "joint")
    if a.mode == "pipelined" and not a.pretrained:
        p.error("--mode pipelined needs --pretrained")
    if a.epochs is None:
        a.epochs = 1 if a.mode == "pipelined" else 15
    if a.method == "michel":
        a.mode, a.epochs, a.anneal_steps, a.gate_lr = None, None, None, None
    a.data_bin = str(Path(a.data_bin).resolve())
    init = str(Path(a.pretrained).resolve()) if a.pretrained else None
    ks = [int(x) for x in a.heads.split(",") if x.strip()]
    work = Path(a.work_dir)
    sweep = sweeps.Sweep(Path(a.results), point_key, where=is_dsp_row)
    base = {"method": a.method, "mode": a.mode, "epochs": a.epochs, "init": init, "arch": a.arch,
            "model_args": a.model_args, "anneal_steps": a.anneal_steps, "straight_through": a.straight_through,
            "gate_lr": a.gate_lr,
            "data_bin": a.data_bin}
    pending = sweep.pending(ks, lambda k: {**base, "K": k}, lambda left: f": K={left}")
    if a.dry_run:
        return
    # run folders are named by the settings, so two sweeps sharing --work-dir never reuse each other's runs
    cfg_hash = sweeps.settings_hash(base)
    for k in pending:
        t0 = time.time()
        tag, run_dir, fin, wall = METHODS[a.method](a, k, work, cfg_hash)
        ev = evaluate(a, run_dir / "final.pt", work / "logs" / f"{tag}.generate.log")
        row = {**base, "K": k, "bleu": ev["bleu"], **{key: fin.get(key) for key in STAT_KEYS},
               "train_wall_s": None if wall is None else round(wall, 1), **{key: v for key, v in ev.items() if key != "bleu"},
               "empty_policy": a.empty_modules,
               "point_wall_s": round(time.time() - t0, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        sweep.record(row, f"{a.method} {a.mode or ''} K={k}: BLEU {row['bleu']} heads {row['heads_kept']}/"
                      f"{row['heads_dense']} per module {'.'.join(map(str, row['heads_per_module']))} "
                      f"sparsity {row['sparsity']:.2f}% params {row['params']}")


if __name__ == "__main__":
    main()
