#!/usr/bin/env python
"""Print a Markdown table of run_glue.py / run_summarization.py JSON-lines results.

    python scripts/hf_results_table.py results/hf_glue.jsonl [--tag-suffix v4]

``before`` is the dev metric of the model before fine-tuning (run_glue's sanity floor),
``loss`` the mean training loss of the last epoch (with the penalty for neuroprune / l1);
rows written before these were reported show ``-``.
"""
import argparse
import json

METRICS = ("accuracy", "mcc", "f1", "pearson", "spearman", "rouge1", "rouge2", "rougeL", "rougeLsum")
PERCENT = ("accuracy", "mcc", "f1", "pearson", "spearman")


def fmt_metrics(r):
    return ", ".join(f"{m} {100 * r[m]:.1f}" if m in PERCENT else f"{m} {r[m]:.2f}" for m in METRICS if m in r)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--tag-suffix", default=None, help="only lines whose tag ends with this")
    args = p.parse_args()
    rows = []
    for path in args.files:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    if args.tag_suffix:
        rows = [r for r in rows if str(r.get("tag", "")).endswith(args.tag_suffix)]
    print("| task | method (tag) | alpha / beta | theta | metrics | before | loss | heads kept | sparsity % "
          "| train s | train n | eval ex/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ab = f"{r['np_alpha']:g} / {r['np_beta']:g}" if "np_alpha" in r else "-"
        before = fmt_metrics(r["before"]) if r.get("before") else "-"
        loss = f"{r['train_loss_last_epoch']:.3f}" if r.get("train_loss_last_epoch") is not None else "-"
        print(f"| {r['task']} | {r['method']} ({r.get('tag', '')}) | {ab} | {r.get('np_theta', '-')} | {fmt_metrics(r)} | "
              f"{before} | {loss} | {r['heads_kept']}/{r['heads_dense']} | {r['sparsity']:.2f} | {r['train_time_s']} | "
              f"{r.get('train_samples', '')} | {r['eval_examples_per_s']} |")


if __name__ == "__main__":
    main()
