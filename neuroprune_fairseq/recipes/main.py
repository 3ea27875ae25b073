#!/usr/bin/env python
"""The main job: prepare a parallel corpus (Multi30k by default), train a dense model, then from it
NeuroPrune (a head target K *and* a sparsity target S) and DSP joint (the same K, the same
epochs), finalise every model the same way, evaluate each on the whole test set (beam 5), and
print one table (also main_results.{md,json} and a frontier PNG in the work dir).

    neuroprune-main --data-dir PATH/multi30k [--src-lang de --tgt-lang en] [--work-dir DIR]
    bash scripts/run_main.sh --data-dir PATH/multi30k          # the same

Progress: the log files are listed at the start; one line per stage and per training epoch
(loss, valid loss, elapsed, time left). A failed step exits non-zero naming the stage and its log.
Resumable: a finished stage is not redone (run folders are named after their settings' hash).
"""
import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from neuroprune_fairseq.fairseq_adapter.checkpoints import active_heads
from neuroprune_fairseq.recipes import datafiles, extra_sets, main_table, presets, runner, scoring, steps, sweeps
from neuroprune_fairseq.recipes.preparation import prepare
from neuroprune_fairseq.recipes.progress import Eta, Job, StageFailed, fmt_s, ft_pace_factor, run_jobs

#: --model-args default (part of the run folders' settings hash: keep the string as it is)
MODEL_ARGS = " ".join(presets.MULTI30K_PRENORM_MODEL)


def updates_per_epoch(bin_dir: Path, src: str, tgt: str, max_tokens: int, multiple: int = 8) -> int:
    """Batches of one epoch of the binarized train split, by fairseq's own batching
    (LanguagePairDataset.batch_by_size with --max-tokens and --required-batch-size-multiple 8)."""
    import logging

    logging.getLogger("fairseq").setLevel(logging.WARNING)  # its import and loaders log INFO to our stdout
    from fairseq.data import Dictionary, LanguagePairDataset, data_utils

    d = Dictionary.load(str(bin_dir / f"dict.{src}.txt"))
    ds = {lang: data_utils.load_indexed_dataset(str(bin_dir / f"train.{src}-{tgt}.{lang}"), d) for lang in (src, tgt)}
    if ds[src] is None or ds[tgt] is None:
        raise SystemExit(f"no train.{src}-{tgt}.* in {bin_dir}: was it prepared for {src}->{tgt}?")
    pair = LanguagePairDataset(ds[src], ds[src].sizes, d, ds[tgt], ds[tgt].sizes, d)
    return len(pair.batch_by_size(pair.ordered_indices(), max_tokens=max_tokens, required_batch_size_multiple=multiple))


def all_threads() -> int:
    n, env = os.cpu_count() or 1, os.environ.get("OMP_NUM_THREADS", "")
    return min(n, int(env)) if env.isdigit() and int(env) > 0 else n


def tag(name: str, settings: dict) -> str:
    return f"{name}_{sweeps.settings_hash(settings)}"


def parse(argv):
    p = argparse.ArgumentParser(prog="neuroprune-main", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", help="raw corpus folder (Multi30k layout or train/valid/test.{src,tgt}); "
                   "default $NEUROPRUNE_DATA/multi30k")
    g.add_argument("--src-lang", default="de")
    g.add_argument("--tgt-lang", default="en")
    g.add_argument("--vocab-size", type=int, default=8000, help="joint sentencepiece vocabulary")
    g.add_argument("--work-dir", default=os.environ.get("NEUROPRUNE_WORK", "/tmp/neuroprune_main"))
    g.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    g.add_argument("--extra-test", action="append", default=[], metavar="NAME=PREFIX",
                   help="a further test set of the pair (PREFIX.SRC, PREFIX.TGT), prepared with the training dictionaries "
                        "and scored like the test set (neuroprune-prepare --extra-test); repeatable")
    g.add_argument("--score-sets", default="all", help="splits every model is scored on, comma-separated (the test "
                   "split always, first); all = test, valid and every --extra-test set")
    g = p.add_argument_group("model and dense schedule")
    g.add_argument("--model-args", default=MODEL_ARGS,
                   help="fairseq model/optimizer arguments of every training stage (default: %(default)s)")
    g.add_argument("--dense-epochs", type=int, default=8)
    g.add_argument("--dense-lr", type=float, default=4e-3)
    g.add_argument("--dense-warmup", type=int, default=250, help="--warmup-updates of the dense run")
    g.add_argument("--dense-end-lr", type=float, default=1e-5, help="polynomial_decay --end-learning-rate")
    g.add_argument("--dense-updates-per-epoch", type=int, help="for --total-num-update = epochs x this (default: counted "
                   "from the binarized train set with fairseq's batch_by_size at --max-tokens)")
    g.add_argument("--max-tokens", type=int, default=presets.PRENORM_MAX_TOKENS, help="of every training stage")
    g.add_argument("--seed", type=int, default=1)
    g = p.add_argument_group("fine-tuning (NeuroPrune and DSP joint, the same budget)")
    g.add_argument("--ft-epochs", type=int, default=2, help="E: epochs of each fine-tuning run")
    g.add_argument("--target-epoch", type=int, default=0,
                   help="NeuroPrune reaches K after this epoch (--np-target-epoch); the epochs after it recover at K. "
                        "Default 0: E-1 (E when E = 1)")
    g.add_argument("--ft-lr", type=float, default=presets.PRENORM_FT_LR)
    g.add_argument("--ft-warmup", type=int, default=presets.PRENORM_FT_WARMUP, help="inverse_sqrt --warmup-updates")
    g.add_argument("--heads", type=int, default=54, help="K: heads kept (--np-target-heads, --dsp-heads)")
    g.add_argument("--sparsity", type=float, default=50, help="S: NeuroPrune --np-proximal --np-target-sparsity (%%)")
    g.add_argument("--alpha", type=float, default=0.5, help="--np-alpha (--np-penalty-scale batch)")
    g.add_argument("--beta", type=float, default=0.1, help="--np-beta")
    g.add_argument("--dsp-lr", type=float, default=0.2, help="DSP gate learning rate")
    g.add_argument("--anneal-fraction", type=float, default=1 / 3, help="DSP --dsp-anneal-steps = this x the run's updates")
    g.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                   help="run the two fine-tuning runs side by side, OMP_NUM_THREADS=1 each (default: when >= 2 CPUs)")
    g = p.add_argument_group("finalize and evaluation")
    g.add_argument("--threshold", type=float, default=1e-3, help="finalize --threshold (zero |w| below it)")
    g.add_argument("--beam", type=int, default=5)
    a = p.parse_args(argv)
    for name in ("dense_epochs", "ft_epochs", "heads", "max_tokens", "vocab_size", "beam"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 <= a.sparsity < 100:
        p.error("--sparsity must be in [0, 100)")
    if not 0 < a.anneal_fraction <= 1:
        p.error("--anneal-fraction must be in (0, 1]")
    a.raw = datafiles.data_dir(a.data_dir, "multi30k")
    if not a.raw.is_dir():
        p.error(f"--data-dir {a.raw} is not a folder")
    for spec in a.extra_test:
        try:
            extra_sets.parse_spec(spec)
        except ValueError as e:
            p.error(str(e))
    a.model = shlex.split(a.model_args)
    if not a.target_epoch:
        a.target_epoch = presets.recovery_target_epoch(a.ft_epochs)
    if not 1 <= a.target_epoch <= a.ft_epochs:
        p.error(f"--target-epoch {a.target_epoch}: must be between 1 and --ft-epochs ({a.ft_epochs})")
    return a


def main(argv=None):
    a = parse(argv)
    t_start = time.time()
    work = Path(a.work_dir).resolve()
    logs, runs = work / "logs", work / "runs"
    prep = work / f"prep_{a.src_lang}-{a.tgt_lang}_v{a.vocab_size}"
    base = {k: getattr(a, k) for k in ("src_lang", "tgt_lang", "vocab_size", "model_args", "max_tokens", "seed")}
    dense_tag = tag("dense", {**base, **{k: getattr(a, k) for k in (
        "dense_epochs", "dense_lr", "dense_warmup", "dense_end_lr", "dense_updates_per_epoch")}})
    ft = {"dense": dense_tag, **{k: getattr(a, k) for k in ("ft_epochs", "ft_lr", "ft_warmup", "heads")}}
    np_tag = tag("neuroprune", {**ft, **{k: getattr(a, k) for k in ("sparsity", "alpha", "beta", "target_epoch")}})
    dsp_tag = tag("dsp-joint", {**ft, "dsp_lr": a.dsp_lr, "anneal": a.anneal_fraction})
    tags = {"dense": dense_tag, "neuroprune": np_tag, "dsp-joint": dsp_tag}
    train_log = {m: logs / f"{t}.train.log" for m, t in tags.items()}
    T = all_threads()
    ft_threads = 1 if a.parallel else T
    runner.log(f"main job: {a.src_lang}->{a.tgt_lang} from {a.raw}; work dir {work}")
    runner.log(f"threads: dense {T}; fine-tuning {'2 runs side by side, 1 thread each' if a.parallel else f'one after the other, {T}'}")
    runner.log("logs (full fairseq output):\n  " + "\n  ".join(
        [str(prep / "preprocess.log")] + [str(train_log[m]) for m in tags] + [str(logs / f"{dsp_tag}.dsp_finalize.log")]
        + [str(logs / f"{t}.{s}.log") for t in tags.values() for s in ("finalize", "generate")]))
    stages = [("dense training", {"dense": a.dense_epochs}), ("fine-tuning", {"neuroprune": a.ft_epochs, "dsp-joint": a.ft_epochs})]
    eta = Eta(stages, parallel=a.parallel, ft_factor=ft_pace_factor(T, ft_threads), models_left=3)
    rows, walls = [], {}

    def stage(name, logfile, fn):
        runner.log(f"stage {name}: start" + (f" (log {logfile})" if logfile else ""))
        t0 = time.time()
        try:
            out = fn()
        except StageFailed:
            raise
        except Exception as e:  # a failed subprocess (runner.run names its log) or bad data
            raise StageFailed(name, logfile or "(none)", f"{type(e).__name__}: {str(e)[:2000]}") from e
        left = eta.total_left(stages[-1][0]) if eta.pace else None
        runner.log(f"stage {name}: done in {fmt_s(time.time() - t0)}; total elapsed {fmt_s(time.time() - t_start)}"
            + (f", about {fmt_s(left)} left" if left is not None else ""))
        return out

    def job(method, extra, threads):
        save = runs / tags[method] / "train"
        cmd = steps.train_command(prep / "bin", save, ["--source-lang", a.src_lang, "--target-lang", a.tgt_lang,
                                                       "--seed", str(a.seed), "--max-tokens", str(a.max_tokens), *a.model, *extra])
        return Job(method, cmd, train_log[method], save, stages[method != "dense"][1][method], {"OMP_NUM_THREADS": str(threads)})

    def finish(method, ckpt, extra_report=None):
        d = runs / tags[method]
        t0 = time.time()
        fin = steps.finalize(ckpt, d / "final.pt", a.threshold, logfile=logs / f"{tags[method]}.finalize.log", data=prep / "bin")
        kept = sum(active_heads(d / "final.pt")[0])  # DSP's emptied module keeps a zeroed placeholder head: not counted
        cache = d / "eval.json"  # {set name: its scores}; a set not in it yet is scored now
        per = json.loads(cache.read_text()).get("per_set", {}) if cache.exists() else {}
        todo = [x for x in ["test", *extra_sets.scored_sets(prep, a.score_sets)] if datafiles.split_name(prep, x) not in per]
        per.update(scoring.score_sets(prep, d / "final.pt", dict.fromkeys(todo), beam=a.beam, logfile_of=lambda sub: logs / (
            f"{tags[method]}.generate.log" if sub == "test" else f"{tags[method]}.generate.{sub}.log")))
        cache.write_text(json.dumps({"per_set": per}))
        ev = per[datafiles.split_name(prep, "test")]
        eta.post_s_per_model, eta.models_left = time.time() - t0, eta.models_left - 1
        row = {"method": method, "bleu": ev["bleu"], "heads_kept": kept, "heads_dense": fin["heads_dense"],
               "sparsity": fin["sparsity"], "flops_ratio": fin["flops_ratio"], "train_wall_s": round(walls.get(method, 0.0), 1),
               "heads_per_module": fin["heads_per_module"], "params": fin["params"], "params_dense": fin["params_dense"],
               **{k: v for k, v in ev.items() if k != "bleu"}, "bleu_sets": {n: e["bleu"] for n, e in per.items()},
               "run": str(d)}
        runner.log(f"{method}: BLEU {row['bleu']:.2f}  heads {kept}/{row['heads_dense']}  sparsity {row['sparsity']:.2f}%  "
            f"({row['n_hyps']}/{row['n_refs']} test sentences, {row['gen_sentences_per_s']} sent/s)")
        rows.append(row)
        return row

    try:
        bin_dir = stage("prepare", prep / "preprocess.log",
                        lambda: prepare(a.raw, prep, a.src_lang, a.tgt_lang, vocab_size=a.vocab_size, workers=a.workers))
        if a.extra_test:
            stage("extra test sets", prep / "preprocess.log", lambda: extra_sets.add_test_sets(prep, a.extra_test))
        extra_sets.scored_sets(prep, a.score_sets)  # an unknown split fails here, before training
        upe = a.dense_updates_per_epoch or updates_per_epoch(bin_dir, a.src_lang, a.tgt_lang, a.max_tokens)
        runner.log(f"{upe} updates per epoch at --max-tokens {a.max_tokens}")
        dense_extra = ["--criterion", "label_smoothed_cross_entropy", "--np-no-head-pruning", "--lr", str(a.dense_lr),
                       "--lr-scheduler", "polynomial_decay", "--warmup-updates", str(a.dense_warmup),
                       "--end-learning-rate", str(a.dense_end_lr), "--total-num-update", str(a.dense_epochs * upe),
                       "--max-epoch", str(a.dense_epochs)]
        walls.update(stage("dense training", train_log["dense"],
                           lambda: run_jobs("dense training", [job("dense", dense_extra, T)], eta, parallel=False)))
        dense_ckpt = runs / dense_tag / "train" / "checkpoint_last.pt"
        dense_row = stage("dense finalize + evaluate", logs / f"{dense_tag}.generate.log", lambda: finish("dense", dense_ckpt))
        if a.heads >= dense_row["heads_dense"]:
            raise SystemExit(f"--heads {a.heads}: the dense model has {dense_row['heads_dense']} heads; choose fewer")
        sched = presets.inverse_sqrt(a.ft_lr, a.ft_warmup)
        np_extra = [*presets.finetune_args("neuroprune", dense_ckpt, a.ft_epochs, a.alpha, a.beta, presets.THETA, sched),
                    "--np-target-heads", str(a.heads), "--np-target-epoch", str(a.target_epoch),
                    "--np-proximal", "--np-target-sparsity", f"{a.sparsity:g}"]
        anneal = max(1, round(a.anneal_fraction * a.ft_epochs * upe))
        dsp_extra = [*sched, "--task", "dsp_translation", "--criterion", "dsp_ce", "--dsp-mode", "joint",
                     "--dsp-pretrained", str(dense_ckpt), "--dsp-heads", str(a.heads), "--dsp-anneal-steps", str(anneal),
                     "--dsp-lr", str(a.dsp_lr), "--max-epoch", str(a.ft_epochs)]
        jobs = [job("neuroprune", np_extra, ft_threads), job("dsp-joint", dsp_extra, ft_threads)]
        walls.update(stage("fine-tuning", train_log["neuroprune"] if not a.parallel else None,
                           lambda: run_jobs("fine-tuning", jobs, eta, parallel=a.parallel)))
        dsp_dir = runs / dsp_tag
        if not (dsp_dir / "pruned.json").exists():
            stage("dsp-joint hard top-K", logs / f"{dsp_tag}.dsp_finalize.log", lambda: runner.run_module(
                "neuroprune_fairseq.commands.dsp_finalize", ["--path", dsp_dir / "train" / "checkpoint_last.pt",
                 "--output", dsp_dir / "pruned.pt", "--data", bin_dir, "--heads", str(a.heads), "--report", dsp_dir / "pruned.json"],
                logfile=logs / f"{dsp_tag}.dsp_finalize.log"))
        stage("neuroprune finalize + evaluate", logs / f"{np_tag}.generate.log",
              lambda: finish("neuroprune", runs / np_tag / "train" / "checkpoint_last.pt"))
        stage("dsp-joint finalize + evaluate", logs / f"{dsp_tag}.generate.log", lambda: finish("dsp-joint", dsp_dir / "pruned.pt"))
    except StageFailed as e:
        print(f"\nERROR: {e}", file=sys.stderr, flush=True)
        raise SystemExit(f"main job failed at stage '{e.stage}': read {e.logfile}")
    except KeyboardInterrupt:
        raise SystemExit("interrupted; rerun the same command to resume (finished stages are kept)")
    title = (f"{a.src_lang}->{a.tgt_lang} test set, beam {a.beam}: dense {a.dense_epochs} epochs; NeuroPrune K={a.heads} "
             f"S={a.sparsity:g}% and DSP joint K={a.heads}, {a.ft_epochs} fine-tuning epochs each")
    out = main_table.write(rows, work, title)
    print("\n" + main_table.plain(rows, title), flush=True)
    runner.log(f"wrote {out['md']}, {out['json']}, {out['png']}; total {fmt_s(time.time() - t_start)}")


if __name__ == "__main__":
    main()
