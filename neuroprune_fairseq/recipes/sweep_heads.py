#!/usr/bin/env python
"""Head-budget frontier (issue 10): one method at one or more K, E epochs, one seed, all from the
same dense checkpoint, finalised the same way, scored on the whole test set. Resumable.

    python scripts/sweep_heads.py --method neuroprune --heads 25,50 --epochs 3 --seed 1 \
        --dense DENSE.pt --prep PREP --work-dir WORK --results results/frontier.jsonl

Methods (every one trains E epochs over the training set in total):
  neuroprune     fine-tune with neuroprune_ce and --np-target-heads K (reached after epoch E, or after
                 --target-epoch E' < E: the last E - E' epochs then recover at K)
  l1             the same with --np-penalty l1 (the paper's l1 baseline, same head control)
  dsp-joint      DSP gates and weights together for E epochs (--dsp-mode joint --dsp-pretrained
                 DENSE), temperature annealed over the first --anneal-fraction of the updates;
                 then the hard top-K (dsp_finalize)
  dsp-pipelined  DSP gates only for 1 epoch (weights frozen), hard top-K, then E-1 epochs of
                 fine-tuning of the pruned model
  michel         Michel et al. importance (one pass over the valid set, no training), top-K,
                 then E epochs of fine-tuning of the pruned model
  dense          the dense checkpoint itself (no training)
  dense-ft       the dense control: the dense model fine-tuned E epochs with plain label_smoothed_cross_entropy
                 and the same schedule (the reference of every "within x BLEU" statement)
Every model then goes through ``python -m neuroprune_fairseq.commands.finalize --threshold T`` (default
1e-3, as the CPU preset) and fairseq-generate on the whole test split (beam 5). Fine-tuning
uses the recipe of the dense model (``--recipe``: presets.MULTI30K_MODEL, MULTI30K_PRENORM_FT or IWSLT14_MODEL, warm-up
restarted).

Rows (JSON lines, appended under a file lock, so parallel jobs may share --results): method, K,
seed, epochs, bleu, heads_kept (heads with a non-zero weight: DSP/Michel's zeroed placeholder
of an emptied module counts 0), heads_physical, heads_per_module, sparsity, params, flops_ratio,
train_wall_s (all phases; michel: importance + fine-tuning), phase_wall_s, gen_sentences_per_s,
n_hyps, n_refs, device, settings. A point already in --results (same method, K, seed, epochs, dense,
settings) is skipped; an interrupted run resumes (fairseq's checkpoint_last.pt, phase markers).
"""
import argparse
import json
import os
import shlex
import time
from pathlib import Path

from neuroprune_fairseq.fairseq_adapter import checkpoints
from neuroprune_fairseq.recipes import datafiles, extra_sets, presets, runner, scoring, steps, sweeps

DEFAULT_ALPHA = {"neuroprune": 0.5, "l1": 0.05}  # the CPU preset's penalty weights (examples/multi30k_cpu/sweep.json)


#: --recipe: the model/optimizer arguments of every training phase (those the dense model was trained with)
RECIPES = {"multi30k": presets.MULTI30K_MODEL, "multi30k-prenorm": presets.MULTI30K_PRENORM_FT,
           "iwslt14": presets.IWSLT14_MODEL}


def references(a) -> Path:
    """The file the test BLEU is computed against (its absence is an error before any training)."""
    if a.recipe == "iwslt14":
        return a.prep / "tok" / "test.en"
    return a.prep / "raw" / f"test.{datafiles.prep_langs(a.prep)[1]}"


def evaluate(a, final: Path, logfile: Path) -> dict:
    """multi30k / any neuroprune-prepare folder: cased detokenized sacrebleu; iwslt14: the
    recipe's two BLEUs (sacrebleu on Moses-detokenized output + tokenized BLEU as DSP reports)."""
    if a.recipe == "iwslt14":
        ev = scoring.evaluate_iwslt(a.prep, final, logfile=logfile)
        if not ev["n_hyps_eq_n_refs"]:
            raise SystemExit(f"{final}: {ev['n_hyps']} hypotheses for {ev['n_refs']} references")
        return ev
    # the test split and every --also-score split, keyed by set name in bleu_sets (the test split first)
    per = scoring.score_sets(a.prep, final, ["test", *a.also_score], lambda sub: logfile if sub == "test" else
                             Path(str(logfile).replace(".generate", f".generate.{sub}")))
    return {**per[next(iter(per))], "bleu_sets": {n: e["bleu"] for n, e in per.items()}}


def point_key(row):
    return row.get("point_key")


class Point:
    """One point's training: its settings and the phases' wall seconds (resumable phases)."""

    def __init__(self, a, k: int, run: Path, logs: Path, s: dict):
        self.a, self.k, self.run, self.logs, self.s = a, k, run, logs, s
        self.bin, self.dense, self.E = a.prep / "bin", a.dense, a.epochs
        self.base = [*RECIPES[a.recipe], *shlex.split(a.model_args), "--seed", str(a.seed)]
        self.walls = {}

    def train(self, phase: str, folder: str, args, log: str) -> Path:
        """``fairseq-train`` into ``run/folder``, timed as ``phase``; returns its last checkpoint."""
        self.walls[phase] = steps.train(self.bin, self.run / folder, args, self.logs / f"{self.run.name}.{log}.log")
        return self.run / folder / "checkpoint_last.pt"

    def prune(self, command: str, args, log: str, phase=None) -> Path:
        """A pruning command (``--output run/pruned.pt --data BIN --heads K --report``), run once."""
        pruned = self.run / "pruned.pt"
        wall = steps.once(self.run / "pruned.done", lambda: runner.run_module(
            command, [*args, "--output", pruned, "--data", self.bin, "--heads", self.k, "--report", self.run / "pruned.json"],
            self.logs / f"{self.run.name}.{log}.log"))
        if phase:
            self.walls[phase] = wall
        return pruned

    def finetune(self, pruned: Path, epochs: int) -> Path:
        """``epochs`` of plain fine-tuning of a pruned model (none: the pruned model itself)."""
        if epochs <= 0:
            return pruned
        return self.train("finetune", "finetune", presets.plain_args(self.base, epochs, pruned.resolve()), "finetune")


def penalised(p: Point) -> Path:
    """neuroprune / l1: fine-tuning with the head target K, reached after --target-epoch."""
    args = presets.finetune_args(p.a.method, p.dense, p.E, p.s["alpha"], p.s["beta"], presets.THETA, p.base) + [
        "--np-target-heads", str(p.k), "--np-target-epoch", str(p.s.get("target_epoch", p.E))]
    return p.train("train", "train", args, "train")


def dsp(mode: str):
    """DSP gates (joint: with the weights, E epochs; pipelined: 1 epoch, then E - 1 of fine-tuning)."""
    def method(p: Point) -> Path:
        gate_epochs = p.E if mode == "joint" else 1
        args = [*p.base, "--task", "dsp_translation", "--criterion", "dsp_ce", "--dsp-heads", str(p.k), "--dsp-mode", mode,
                "--dsp-pretrained", str(p.dense), "--max-epoch", str(gate_epochs), "--dsp-anneal-steps",
                str(p.s["anneal_steps"]), "--dsp-lr", str(p.s["gate_lr"])]
        gates = p.train("gates" if mode == "pipelined" else "train", "dsp", args, "dsp")
        pruned = p.prune("neuroprune_fairseq.commands.dsp_finalize", ["--path", gates], "dsp_finalize")
        return p.finetune(pruned, 0 if mode == "joint" else p.E - 1)

    return method


def michel(p: Point) -> Path:
    """Michel et al.'s importance on the dense model, top-K, then E epochs of fine-tuning."""
    pruned = p.prune("neuroprune_fairseq.commands.head_importance", ["--path", p.dense], "importance", phase="importance")
    return p.finetune(pruned, p.E)


#: every method: how one point trains (the model it returns is finalised and scored alike)
METHODS = {"neuroprune": penalised, "l1": penalised, "dsp-joint": dsp("joint"), "dsp-pipelined": dsp("pipelined"),
           "michel": michel, "dense": lambda p: p.dense,
           "dense-ft": lambda p: p.train("train", "train", presets.plain_args(p.base, p.E, p.dense), "train")}


def run_point(a, k, run: Path, logs: Path, s: dict):
    """Train/prune one point; returns (checkpoint to finalise, {phase: wall seconds})."""
    p = Point(a, k, run, logs, s)
    run.mkdir(parents=True, exist_ok=True)
    return METHODS[a.method](p), p.walls


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--heads", default="10,25,50,75,100", help="comma-separated budgets K (dense, dense-ft: all the dense model's heads)")
    p.add_argument("--epochs", type=int, default=3, help="E: epochs over the training set, the same for every method")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dense", required=True, help="dense fairseq checkpoint every method starts from")
    p.add_argument("--prep", required=True, help="prepared data: PREP/bin (fairseq binary), PREP/raw/test.TGT (references), PREP/prep.json (languages; neuroprune-prepare)")
    p.add_argument("--work-dir", default=os.environ.get("NEUROPRUNE_WORK", "/tmp/neuroprune_heads"))
    p.add_argument("--results", default="results/frontier_heads.jsonl")
    p.add_argument("--threshold", type=float, default=1e-3, help="finalize --threshold of every model")
    p.add_argument("--alpha", type=float, help="neuroprune/l1 penalty weight (default 0.5 / 0.05, the preset's)")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--gate-lr", type=float, default=0.2, help="DSP --dsp-lr (DSP's --pruning-lr)")
    p.add_argument("--anneal-fraction", type=float, default=1 / 3,
                   help="DSP: T = this fraction of the gate-training updates (joint: E epochs, pipelined: 1)")
    p.add_argument("--updates-per-epoch", type=float, help="for T (default: the dense checkpoint's updates / epochs)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default="multi30k",
                   help="model/optimizer arguments and scoring: multi30k (the CPU preset, any neuroprune-prepare folder) or "
                        "iwslt14 (the paper's 108-head IWSLT model, examples/iwslt14_de_en; tokenized BLEU too)")
    p.add_argument("--target-epoch", type=int, default=0,
                   help="neuroprune/l1: the epoch after which K is reached (--np-target-epoch; default 0 = E, the last); "
                        "E-1 leaves one epoch of recovery at K, as dsp-pipelined and michel fine-tune after pruning")
    p.add_argument("--model-args", default="", help="extra fairseq-train arguments for every training phase")
    p.add_argument("--label", help="method name in the results (default: --method), e.g. 'neuroprune-sp50' for a variant "
                                   "run with --model-args '--np-target-sparsity 50'; the plot draws each label apart")
    p.add_argument("--also-score", default="", help="comma-separated further splits of --prep scored the same way "
                   "(e.g. valid); rows get bleu_sets {set name: BLEU}, the test split first (not a point-key setting)")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    if a.epochs < 1 or (a.method == "dsp-pipelined" and a.epochs < 2):
        p.error("--epochs must be >= 1 (dsp-pipelined: >= 2, one gate epoch then fine-tuning)")
    if "--np-target-epoch" in a.model_args:
        p.error("--model-args must not set --np-target-epoch (the sweep sets it): use --target-epoch")
    if a.target_epoch and (a.method not in ("neuroprune", "l1") or not 1 <= a.target_epoch <= a.epochs):
        p.error(f"--target-epoch {a.target_epoch}: only for neuroprune/l1, and 1 <= it <= --epochs ({a.epochs})")
    a.dense, a.prep = Path(a.dense).resolve(), Path(a.prep).resolve()
    a.also_score = [x.strip() for x in a.also_score.split(",") if x.strip()]
    if a.also_score and a.recipe == "iwslt14":
        p.error("--also-score: not for --recipe iwslt14 (its test set is scored with two BLEUs); leave it empty")
    try:  # the splits the prep folder has (as neuroprune-evaluate --subset and sweep.py --also-score check them)
        a.also_score = [x for x in extra_sets.scored_sets(a.prep, ",".join(a.also_score)) if x != "test"] if a.also_score else []
    except ValueError as e:
        p.error(str(e))
    if not (a.prep / "bin").exists():
        p.error(f"{a.prep / 'bin'} does not exist")
    for need in (a.dense, references(a)):
        if not need.exists():
            p.error(f"{need} does not exist")
    # dense, dense-ft: K = every head of the dense model (--heads is not used)
    ks = [sum(checkpoints.active_heads(a.dense)[1])] if a.method in ("dense", "dense-ft") else [int(x) for x in a.heads.split(",") if x.strip()]
    s = {"threshold": a.threshold}
    if a.method in ("neuroprune", "l1"):
        s.update(alpha=a.alpha if a.alpha is not None else DEFAULT_ALPHA[a.method], beta=a.beta)
        if a.target_epoch and a.target_epoch != a.epochs:  # (the default keeps the point keys of earlier rows)
            s["target_epoch"] = a.target_epoch
    if a.method.startswith("dsp"):
        upe = a.updates_per_epoch or checkpoints.updates_per_epoch(a.dense)
        gate_epochs = a.epochs if a.method == "dsp-joint" else 1
        s.update(gate_lr=a.gate_lr, anneal_steps=max(1, round(a.anneal_fraction * gate_epochs * upe)))
    if a.model_args:
        s["model_args"] = a.model_args
    if a.recipe != "multi30k":  # (multi30k points keep the keys they had before --recipe existed)
        s["recipe"] = a.recipe
    if a.label:
        s["base_method"] = a.method
    work = Path(a.work_dir)
    sweep = sweeps.Sweep(Path(a.results), point_key)
    epochs = 0 if a.method == "dense" else a.epochs
    for k in ks:
        ident = {"method": a.label or a.method, "K": k, "seed": a.seed, "epochs": epochs, "dense": str(a.dense), **s}
        pkey = sweeps.settings_hash(ident, 12)
        if sweep.done({"point_key": pkey}):
            runner.log(f"{a.method} K={k} seed={a.seed}: already in {sweep.results}")
            continue
        tag = f"{a.label or a.method}_K{k}_e{epochs}_s{a.seed}_{pkey}"
        runner.log(f"{tag}: {json.dumps(ident)}")
        if a.dry_run:
            continue
        t0 = time.time()
        run, logs = work / "runs" / tag, work / "logs"
        src, walls = run_point(a, k, run, logs, s)
        final = run / "final.pt"
        fin = steps.finalize(src, final, a.threshold, logfile=logs / f"{tag}.finalize.log", data=a.prep / "bin")
        act, phys = checkpoints.active_heads(final)
        ev = evaluate(a, final, logs / f"{tag}.generate.log")
        if a.method != "dense" and sum(act) != k:
            runner.log(f"WARNING {tag}: {sum(act)} active heads, not K={k}")
        row = {**ident, "point_key": pkey, "bleu": ev["bleu"], "heads_kept": sum(act), "heads_physical": sum(phys),
               "heads_per_module": act, "heads_dense": fin.get("heads_dense"),
               **{key: fin.get(key) for key in ("sparsity", "params", "params_dense", "flops_ratio", "structured_share",
                                                "structured_share_beyond_heads", "input_groups_zeroed", "mlp_neurons_dead")},
               "train_wall_s": round(sum(walls.values()), 1), "phase_wall_s": {kk: round(v, 1) for kk, v in walls.items()},
               **{key: v for key, v in ev.items() if key != "bleu"},
               "point_wall_s": round(time.time() - t0, 1), "device": runner.device_desc(),
               "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
        sweep.record(row, f"{a.method} K={k} seed={a.seed}: BLEU {row['bleu']} heads {row['heads_kept']} "
                      f"({'.'.join(map(str, act))}) sparsity {row['sparsity']:.2f}% train {row['train_wall_s']} s")


if __name__ == "__main__":
    main()
