#!/usr/bin/env python
"""Print a Markdown table of run_glue.py / run_summarization.py JSON-lines results.

    python scripts/hf_results_table.py results/hf_glue.jsonl [--tag-suffix v4]
    python scripts/hf_results_table.py results/hf_glue.jsonl results/hf_glue_sparsity.jsonl --tag-suffix v4 \
        --by-sparsity [--plot results/hf_glue_sparsity.png]

``--by-sparsity``: Fig. 4's analogue, one table per task: the dense row, then NeuroPrune and l1
side by side at each target sparsity (rows with ``np_target_sparsity``), metric and measured sparsity.

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


#: the metric a task is judged by (GLUE's: MCC for CoLA, F1 for MRPC/QQP, Pearson for STS-B)
MAIN_METRIC = {"CoLA": "mcc", "MRPC": "f1", "QQP": "f1", "STS-B": "pearson"}


def main_metric(r) -> str:
    m = MAIN_METRIC.get(r["task"], "accuracy")
    return m if m in r else "accuracy"


def by_sparsity(rows):
    """{task: {"dense": row or None, S: {"neuroprune": row, "l1": row}}} (the last row of each wins)."""
    out = {}
    for r in rows:
        t = out.setdefault(r["task"], {"dense": None})
        if r["method"] == "dense":
            t["dense"] = r
        elif r.get("np_target_sparsity") is not None:
            t.setdefault(float(r["np_target_sparsity"]), {})[r["method"]] = r
    return out


def sparsity_tables(rows) -> str:
    lines = []
    for task, t in by_sparsity(rows).items():
        levels = sorted(k for k in t if k != "dense")
        some = t["dense"] or next(iter(t[levels[0]].values()))
        m = main_metric(some)
        lines += [f"**{task}** ({m}, dev set; sparsity = measured % of attention + MLP weights zero or removed; heads kept)", "",
                  "| target S | NeuroPrune | l1 |", "|---|---|---|"]
        cell = lambda r: "-" if r is None else f"{100 * r[m]:.1f} ({r['sparsity']:.1f}%, {r['heads_kept']}/{r['heads_dense']} heads)"  # noqa: E731
        if t["dense"]:
            lines.append(f"| dense | {cell(t['dense'])} | |")
        for s in levels:
            lines.append(f"| {s:g} | {cell(t[s].get('neuroprune'))} | {cell(t[s].get('l1'))} |")
        lines.append("")
    return "\n".join(lines)


def plot(rows, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = {t: v for t, v in by_sparsity(rows).items() if len(v) > 1}  # tasks with sparsity rows
    if not tables:
        raise SystemExit("--plot: no rows with np_target_sparsity")
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.4), squeeze=False)
    for ax, (task, t) in zip(axes[0], tables.items()):
        levels = sorted(k for k in t if k != "dense")
        m = main_metric(t["dense"] or next(iter(t[levels[0]].values())))
        for method, style in (("neuroprune", "o-"), ("l1", "s--")):
            pts = sorted((t[s][method]["sparsity"], 100 * t[s][method][m]) for s in levels if method in t[s])
            if pts:
                ax.plot(*zip(*pts), style, label=method)
        if t["dense"]:
            ax.axhline(100 * t["dense"][m], color="gray", ls=":", label="dense")
        ax.set(title=task, xlabel="sparsity %", ylabel=m)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def structure_table(rows) -> str:
    """One line per run with how its sparsity was reached and the structure the evaluated model
    has (run_glue.py's ``structure`` field): ``--structure``."""
    out = ["| task | method | mode | S | metrics | sparsity % | pts cut | groups zeroed | dead neurons | zero fc2 rows "
           "| struct. % | 1x4 <=2 nz % | train s | eval ex/s |", "|" + "---|" * 14]
    for r in rows:
        st = r.get("structure") or {}
        s_ = r.get("np_target_sparsity")
        cells = [r["task"], r["method"], r.get("np_target_mode", "-") if s_ is not None else "-",
                 f"{s_:g}" if s_ is not None else "-", fmt_metrics(r), f"{r['sparsity']:.2f}",
                 f"{r['points_cut']:.2f}" if r.get("points_cut") is not None else "-",
                 f"{st.get('input_groups_zeroed', '-')}/{st.get('input_groups', '-')}",
                 f"{st.get('mlp_neurons_dead', '-')}/{st.get('mlp_neurons', '-')}",
                 f"{st.get('fc2_rows_zero', '-')}/{st.get('fc2_rows', '-')}",
                 f"{st['structured_share']:.1f}" if "structured_share" in st else "-",
                 f"{st['blocks_1x4_at_most_2_nonzero']:.1f}" if "blocks_1x4_at_most_2_nonzero" in st else "-",
                 f"{r['train_time_s']}", f"{r['eval_examples_per_s']}"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+")
    p.add_argument("--tag-suffix", default=None, help="only lines whose tag ends with this")
    p.add_argument("--by-sparsity", action="store_true", help="Fig. 4's analogue: metric per target sparsity, NeuroPrune vs l1")
    p.add_argument("--plot", help="with --by-sparsity: also draw metric vs measured sparsity per task (PNG)")
    p.add_argument("--structure", action="store_true", help="one line per run: target mode, points the cut made, structure")
    args = p.parse_args()
    rows = []
    for path in args.files:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    if args.tag_suffix:
        rows = [r for r in rows if str(r.get("tag", "")).endswith(args.tag_suffix)]
    if args.structure:
        print(structure_table(rows))
        return
    if args.by_sparsity:
        print(sparsity_tables(rows))
        if args.plot:
            plot(rows, args.plot)
        return
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
