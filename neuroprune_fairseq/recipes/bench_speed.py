#!/usr/bin/env python
"""Side-by-side speed measurements on one machine, in one run.

(a) time per update of ``label_smoothed_cross_entropy``, ``neuroprune_ce`` (gradient mode),
    ``neuroprune_ce --np-proximal`` and ``--np-proximal --np-target-sparsity 50``: fairseq
    Trainers built in-process on the same data, model shape and weights; the same batches
    are fed to all, the order rotated batch by batch (so load from other processes hits all
    alike); the ratios of median update times to label_smoothed_cross_entropy are printed
    (target <= 1.05). ``--skip-generate`` stops here (no pruned checkpoint needed).
(b) generation throughput (fairseq-generate, beam 5, same batch size, sentences/s) of the
    dense model, the finalised pruned model, and the same pruned model "masked": padded
    back to the dense shape with zero rows/columns for the removed heads and MLP neurons
    (it computes the same function at the dense cost); next to it the FLOP ratio from
    the finalize JSON.

    python scripts/bench_speed.py --prep-dir WORK/prep --dense CKPT --pruned CKPT [--updates 20] [--out results/bench.json]
    python scripts/bench_speed.py --prep-dir WORK/prep --dense CKPT --skip-generate [--update-modes ...]
    python scripts/bench_speed.py ... --pruned CKPT --more-pruned RUN_S25/checkpoint_last.pt RUN_S50/... --skip-updates

(c) with ``--more-pruned``: the same decoding for more pruned checkpoints (one per sparsity),
    a table of sparsity, heads, MLP neurons and FLOP ratio next to sentences/s and BLEU.

``--prep-dir`` is the Multi30k folder written by the recipes (``bin/``, ``raw/``).
"""
import argparse
import json
import os
import statistics
import time
from pathlib import Path

from neuroprune_fairseq.fairseq_adapter import checkpoints
from neuroprune_fairseq.recipes import datafiles, presets, runner, scoring, steps


def build_trainer(bin_dir, crit_args, model_args, ckpt):
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    import neuroprune_fairseq.plugin  # noqa: F401  (this package is imported already, so --user-dir would skip it)

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(bin_dir), "--user-dir", runner.USER_DIR, *steps.COMMON_TRAIN,
                                                *model_args, *crit_args, "--np-no-head-pruning", "--cpu"])
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    if ckpt:
        state = checkpoints.read_state(ckpt)
        model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return task, Trainer(cfg, task, model, criterion)


UPDATE_MODES = {
    # name: criterion/task arguments (all on the same data, model shape and weights)
    "label_smoothed_cross_entropy": ["--criterion", "label_smoothed_cross_entropy"],
    "neuroprune_ce": ["--criterion", "neuroprune_ce"],  # gradient mode (the penalty in the loss)
    "neuroprune_ce_proximal": ["--criterion", "neuroprune_ce", "--np-proximal"],
    "neuroprune_ce_target": ["--criterion", "neuroprune_ce", "--np-proximal", "--np-target-sparsity", "50"],
}


def bench_updates(bin_dir, ckpt, n_updates, alpha, beta, warmup=2, modes=tuple(UPDATE_MODES)):
    """Median time per update of each mode, the same batches fed to every mode, the order
    rotated batch by batch. The target mode ramps to 50% over one epoch, so its threshold
    enforcement runs at every measured update (its worst case)."""
    model_args = presets.MULTI30K_MODEL
    trainers = {}
    task_a = None
    for name in modes:
        crit = list(UPDATE_MODES[name])
        if name != "label_smoothed_cross_entropy":
            crit += ["--np-alpha", str(alpha), "--np-beta", str(beta)]
        task, tr = build_trainer(bin_dir, crit + ["--max-epoch", "1"], model_args, ckpt)
        task_a = task_a or task
        trainers[name] = tr
    itr = task_a.get_batch_iterator(dataset=task_a.dataset("train"), max_tokens=4096, seed=1,
                                    ignore_invalid_inputs=True).next_epoch_itr(shuffle=True)
    if "neuroprune_ce_target" in trainers:  # the run's length for the target ramp
        trainers["neuroprune_ce_target"].task._train_itr = itr
    batches = [next(itr) for _ in range(n_updates + warmup)]
    times = {k: [] for k in trainers}
    names = list(trainers)
    for i, b in enumerate(batches):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            trainers[name].train_step([b])
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    tot = {k: sum(v) for k, v in times.items()}
    base = "label_smoothed_cross_entropy"
    out = {"updates": n_updates, "median_s_per_update": med, "total_s": tot,
           "ratios_median": {k: med[k] / med[base] for k in med}, "ratios_total": {k: tot[k] / tot[base] for k in tot}}
    if "neuroprune_ce" in med:  # the keys of earlier result files
        out["ratio_median"], out["ratio_total"] = out["ratios_median"]["neuroprune_ce"], out["ratios_total"]["neuroprune_ce"]
    if "neuroprune_ce_target" in trainers:
        from neuroprune_fairseq.fairseq_adapter.sites import model_sparsity

        out["target_mode_sparsity_after"] = model_sparsity(trainers["neuroprune_ce_target"].model).sparsity
    return out


def finalize_into(a, prep: Path, work: Path, ckpt, name: str) -> dict:
    """``finalize --threshold`` of one checkpoint into ``work/name`` (the prep's dictionaries: a
    checkpoint's own data path may be relative to where it was trained); its report."""
    return steps.finalize(Path(ckpt), work / name, a.threshold, logfile=work / "finalize.log", data=prep / "bin")


def sparsity_speed_table(a, prep, work, refs, dense_sps):
    """(c) how much sparsity becomes speed: every --more-pruned checkpoint (e.g. one per
    --np-target-sparsity) finalised with --threshold and decoded like (b); one row each with
    sparsity, heads, MLP neurons and FLOP ratio next to sentences/s and BLEU."""
    rows = []
    for i, ck in enumerate(a.more_pruned):
        label = f"{i}_{Path(ck).parent.name}"
        fin = finalize_into(a, prep, work, ck, f"more_{label}.pt")
        runs = [scoring.generate(prep / "bin", work / f"more_{label}.pt", subset=a.subset, beam=5, batch_size=a.batch_size,
                               extra=scoring.gen_cap(prep), logfile=work / f"gen_more_{label}.log") for _ in range(a.reps)]
        best = max(runs, key=lambda g: g.get("sentences_per_s", 0))
        bleu, _ = scoring.sacrebleu_score(best["hyps"], refs, trg_lang=datafiles.prep_langs(prep)[1])
        rows.append({"checkpoint": str(ck), "sparsity": fin["sparsity"], "heads_kept": fin["heads_kept"],
                     "mlp_neurons_kept": fin["mlp_neurons_kept"], "mlp_neurons_dense": fin["mlp_neurons_dense"],
                     "flops_ratio": fin["flops_ratio"], "sentences_per_s": best.get("sentences_per_s"),
                     "speedup_vs_dense": best.get("sentences_per_s", 0) / dense_sps, "bleu": round(bleu, 2),
                     "output_tokens": sum(len(h.split()) for h in best["hyps"]),
                     **{k: fin.get(k) for k in ("structured_share", "structured_share_beyond_heads", "input_groups_zeroed",
                                               "mlp_neurons_dead", "fc2_rows_zero")}})
    print(f"(c) sparsity vs speed (finalised with --threshold {a.threshold:g}, beam 5, batch {a.batch_size}):")
    print("    sparsity %  heads  MLP neurons  FLOPs ratio  sentences/s  speed-up  BLEU   checkpoint")
    for r in sorted(rows, key=lambda r: r["sparsity"]):
        print(f"    {r['sparsity']:9.2f}  {r['heads_kept']:5d}  {r['mlp_neurons_kept']:5d}/{r['mlp_neurons_dense']:<5d}  "
              f"{r['flops_ratio']:11.3f}  {r['sentences_per_s']:11.1f}  {r['speedup_vs_dense']:7.2f}x  {r['bleu']:5.2f}  "
              f"{r['checkpoint']}")
    return rows


def pad_to_dense(final_ckpt, out, data_bin):
    """The finalised pruned checkpoint padded back to the dense shape with zeros (removed heads
    and MLP neurons: ``neuroprune_fairseq.fairseq_adapter.sites.pad_to_dense_``). Same
    function, dense cost ("masked" pruning). Returns how many attention modules were padded."""
    from neuroprune_fairseq.fairseq_adapter.sites import pad_to_dense_

    ck = checkpoints.load(str(final_ckpt), str(data_bin))
    padded = pad_to_dense_(ck.model)
    ck.state["model"] = ck.model.state_dict()
    checkpoints.save(ck.state, str(out))
    return padded["attention_modules"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prep-dir", required=True)
    p.add_argument("--dense", required=True, help="dense checkpoint (e.g. WORK/dense_e3/checkpoint_last.pt)")
    p.add_argument("--pruned", help="NeuroPrune checkpoint (checkpoint_last.pt of a fine-tuning run); needed unless --skip-generate")
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--threshold", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--subset", default="test")
    p.add_argument("--reps", type=int, default=1, help="generation repeats per model (best taken), interleaved")
    p.add_argument("--skip-updates", action="store_true")
    p.add_argument("--skip-generate", action="store_true", help="only (a): time per update")
    p.add_argument("--more-pruned", nargs="+", default=[],
                   help="(c): more pruned checkpoints (e.g. one per target sparsity), each finalised and decoded; "
                        "one row each: sparsity, heads, MLP neurons, FLOPs ratio, sentences/s, speed-up, BLEU")
    p.add_argument("--update-modes", nargs="+", choices=list(UPDATE_MODES), default=list(UPDATE_MODES),
                   help="modes timed side by side in (a) (default: all)")
    p.add_argument("--work-dir", default="/tmp/neuroprune_bench")
    p.add_argument("--out", help="write the numbers as JSON here")
    a = p.parse_args(argv)
    if not a.skip_generate and not a.pruned:
        p.error("--pruned is needed for the generation benchmark (or pass --skip-generate)")
    prep, work = Path(a.prep_dir), Path(a.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    res = {"omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count()}
    if not a.skip_updates:
        res["update"] = bench_updates(prep / "bin", a.dense, a.updates, a.alpha, a.beta, modes=a.update_modes)
        u = res["update"]
        print(f"(a) time/update over {u['updates']} updates (same batches, order rotated), "
              f"OMP_NUM_THREADS={res['omp_num_threads']}:")
        for k in u["median_s_per_update"]:
            print(f"    {k:<30} {u['median_s_per_update'][k]:.3f}s median  ratio vs label_smoothed_cross_entropy "
                  f"{u['ratios_median'][k]:.3f}x (median), {u['ratios_total'][k]:.3f}x (total)", flush=True)
        if "target_mode_sparsity_after" in u:
            print(f"    (target mode: sparsity {u['target_mode_sparsity_after']:.2f}% after the measured updates)")
    if a.skip_generate:
        if a.out:
            Path(a.out).parent.mkdir(parents=True, exist_ok=True)
            Path(a.out).write_text(json.dumps(res, indent=1))
        return res
    fin_d = finalize_into(a, prep, work, a.dense, "dense_final.pt")
    fin_p = finalize_into(a, prep, work, a.pruned, "pruned_final.pt")
    n_masked = pad_to_dense(work / "pruned_final.pt", work / "pruned_masked.pt", prep / "bin")
    models = {"dense": work / "dense_final.pt", "pruned_finalized": work / "pruned_final.pt",
              "pruned_masked": work / "pruned_masked.pt"}
    gen = {k: [] for k in models}
    for _ in range(a.reps):
        for name, ck in models.items():
            gen[name].append(scoring.generate(prep / "bin", ck, subset=a.subset, beam=5, batch_size=a.batch_size,
                                            extra=scoring.gen_cap(prep), logfile=work / f"gen_{name}.log"))
    refs = datafiles.read_lines(prep / "raw" / f"{a.subset}.{datafiles.prep_langs(prep)[1]}")
    res["generate"] = {}
    for name, runs in gen.items():
        best = max(runs, key=lambda g: g.get("sentences_per_s", 0))
        bleu, _ = scoring.sacrebleu_score(best["hyps"], refs, trg_lang=datafiles.prep_langs(prep)[1])
        res["generate"][name] = {"sentences_per_s": best.get("sentences_per_s"), "gen_s": best.get("gen_s"),
                                 "tokens_per_s": best.get("tokens_per_s"),
                                 "output_tokens": sum(len(h.split()) for h in best["hyps"]),
                                 "all_sentences_per_s": [g.get("sentences_per_s") for g in runs],
                                 "n_hyps": len(best["hyps"]), "bleu": round(bleu, 2)}
    g = res["generate"]
    hf, hm = gen["pruned_finalized"][0]["hyps"], gen["pruned_masked"][0]["hyps"]
    res["masked_equals_finalized"] = sum(x == y for x, y in zip(hf, hm)) / max(len(hf), 1)
    res["flops"] = {"dense_flops_per_token": fin_d["flops_per_token"], "pruned_flops_per_token": fin_p["flops_per_token"],
                    "pruned_flops_ratio_vs_dense": fin_p["flops_per_token"] / fin_d["flops_per_token"],
                    "finalize_flops_ratio": fin_p["flops_ratio"], "pruned_heads_kept": fin_p["heads_kept"],
                    "pruned_sparsity": fin_p["sparsity"], "masked_modules_padded": n_masked}
    sd = g["dense"]["sentences_per_s"]
    print(f"(b) generation, beam 5, batch {a.batch_size}, {a.subset} ({g['dense']['n_hyps']} sentences), "
          f"OMP_NUM_THREADS={res['omp_num_threads']}:")
    for name in models:
        s = g[name]["sentences_per_s"]
        print(f"    {name:<17} {s:8.1f} sentences/s  speed-up vs dense {s / sd:5.2f}x  {g[name]['tokens_per_s']:8.1f} "
              f"tokens/s  BLEU {g[name]['bleu']:.2f}  (output words {g[name]['output_tokens']})")
    print(f"    masked and finalised outputs identical for {100 * res['masked_equals_finalized']:.1f}% of sentences")
    print("    (sentences/s compares like with like only when the outputs have similar lengths; the masked model "
          "computes the finalised model's function, so those two outputs match)")
    print(f"    FLOPs/token: pruned/dense = {res['flops']['pruned_flops_ratio_vs_dense']:.3f} "
          f"(finalize's flops_ratio {fin_p['flops_ratio']:.3f}); heads kept {fin_p['heads_kept']}/{fin_p['heads_dense']}, "
          f"sparsity {fin_p['sparsity']:.2f}%")
    if a.more_pruned:
        res["sparsity_speed"] = sparsity_speed_table(a, prep, work, refs, sd)
    if a.out:
        datafiles.write_json(a.out, res)
    return res


if __name__ == "__main__":
    main()
