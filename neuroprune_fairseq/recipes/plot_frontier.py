#!/usr/bin/env python
"""Plot sweep results (JSON lines from scripts/sweep.py, scripts/sweep_dsp.py, scripts/sweep_heads.py).

    python scripts/plot_frontier.py results/frontier.jsonl [more.jsonl] --out results/frontier.png \
        --table results/frontier.md [--bleu-tolerance 1 2]

Draws every method found (dense, neuroprune, l1, dsp-joint, dsp-pipelined, michel, ...; rows of
scripts/sweep_dsp.py, which do not fine-tune after pruning, are labelled ``dsp-pipelined-noft``,
``michel-noft``):
  left:  BLEU vs heads kept (Fig. 6 left), every seed as a point, a line through each method's
         mean BLEU per K (methods run at head budgets K) or its upper frontier (others);
  then one panel per ``--bleu-tolerance`` (default 1 and 2): the efficient frontier, sparsity (%)
         vs heads kept for the models within that many BLEU of the reference (Fig. 6 right),
         with each method's Pareto frontier (fewer heads, more sparsity).
The reference is the dense fine-tuned control (``dense-ft`` rows: the dense model fine-tuned the same
epochs; its mean over seeds, the seeds' range drawn as a band) when there is one, else the dense model.
Rows with ``bleu_sets`` (BLEU per test set, keyed by set name) get one matched-table block per set.
Prints (and ``--table`` writes) markdown: every row; the matched table (K per row, method per
column; BLEU, sparsity, train time, generation speed; one value per seed, the mean first when
there are several); the efficient-frontier points per tolerance; and NeuroPrune next to the DSP
point with the nearest head count.
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from neuroprune_fairseq.recipes.frontier_tables import (  # noqa: E402
    CONTROLS, control_table, frontier_points, frontier_table, matched_k_table, matched_table, methods_of, reference,
    table, upper_frontier)

STYLE = {"dense": ("black", "*"), "dense-ft": ("dimgray", "X"), "neuroprune": ("tab:blue", "o"), "l1": ("tab:orange", "s"), "dsp": ("tab:green", "^"),
         "dsp-joint": ("tab:green", "^"), "dsp-pipelined": ("tab:olive", "v"), "michel": ("tab:red", "P"),
         "dsp-pipelined-noft": ("tab:gray", "v"), "michel-noft": ("tab:pink", "P")}
EXTRA = ["tab:purple", "tab:brown", "tab:cyan", "gold", "navy", "lime"]


def load(paths):
    rows = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("bleu") is not None and r.get("heads_kept") is not None:
                    r["method"] = label(r)
                    for name, b in (r.get("bleu_sets") or {}).items():
                        r[f"bleu:{name}"] = b
                    rows.append(r)
    return rows


def label(r):
    """scripts/sweep_dsp.py rows (they carry ``mode``) prune without fine-tuning afterwards."""
    m = r["method"]
    if "mode" in r and m in ("dsp", "michel"):
        return f"dsp-{r['mode']}-noft" if m == "dsp" and r.get("mode") == "pipelined" else \
            f"dsp-{r['mode']}" if m == "dsp" else "michel-noft"
    return m






def style(method, seen):
    if method not in STYLE:
        STYLE[method] = (EXTRA[len(seen) % len(EXTRA)], "D")
        seen.add(method)
    return STYLE[method]








def draw_frontier(ax, rows, ref_bleu, tol, ref_name):
    seen = set()
    pts = frontier_points(rows, ref_bleu, tol)
    for m in methods_of(rows):
        near = pts.get(m, [])
        if not near:
            continue
        color, marker = style(m, seen)
        ax.scatter([r["heads_kept"] for r in near], [r["sparsity"] for r in near], c=color, marker=marker,
                   s=90 if m == "dense" else 45, label=m, zorder=3)
        if m != "dense" and len(near) > 1:
            fr = upper_frontier([(r["heads_kept"], r["sparsity"]) for r in near])
            ax.plot([f[0] for f in fr], [f[1] for f in fr], c=color, alpha=0.6)
        for r in near:
            ax.annotate(f"{r['bleu']:.1f}", (r["heads_kept"], r["sparsity"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("attention heads kept")
    ax.set_ylabel("sparsity of attention + MLP weights (%)")
    ax.set_title(f"efficient frontier: within {tol:g} BLEU of {ref_name} ({ref_bleu:.2f})\n"
                 "(labels: BLEU)", fontsize=10)
    ax.grid(alpha=0.3)
    if ax.collections:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no point within the tolerance", transform=ax.transAxes, ha="center")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--out", default="results/frontier.png")
    p.add_argument("--bleu-tolerance", type=float, nargs="+", default=[1.0, 2.0],
                   help="'similar BLEU': within this of the reference BLEU (dense-ft, else dense); one frontier panel per value")
    p.add_argument("--title", default="")
    p.add_argument("--table", help="also write the markdown tables here")
    a = p.parse_args(argv)
    rows = load(a.results)
    if not rows:
        raise SystemExit("no results with bleu and heads_kept")
    methods = methods_of(rows)
    ref_name, ref_bleu, ref_pts = reference(rows)
    seen = set()
    fig, axes = plt.subplots(1, 1 + len(a.bleu_tolerance), figsize=(6 * (1 + len(a.bleu_tolerance)), 4.8))
    ax1 = axes[0]
    for m in methods:
        color, marker = style(m, seen)
        mr = [r for r in rows if r["method"] == m]
        xs, ys = [r["heads_kept"] for r in mr], [r["bleu"] for r in mr]
        ax1.scatter(xs, ys, c=color, marker=marker, s=90 if m in CONTROLS else 45, label=f"{m} ({len(mr)})", zorder=3)
        if m in CONTROLS or len(mr) < 2:
            continue
        if all(r.get("K") is not None for r in mr):  # budgets: mean over seeds at each K
            ks = sorted({r["K"] for r in mr})
            line = [(sum(r["heads_kept"] for r in mr if r["K"] == k) / sum(1 for r in mr if r["K"] == k),
                     sum(r["bleu"] for r in mr if r["K"] == k) / sum(1 for r in mr if r["K"] == k)) for k in ks]
        else:
            line = upper_frontier(list(zip(xs, ys)))
        ax1.plot([f[0] for f in line], [f[1] for f in line], c=color, alpha=0.6)
    if ref_pts:
        ax1.axhline(ref_bleu, c="black", ls=":", lw=1)
        if len(ref_pts) > 1:  # the reference's seeds: its noise
            ax1.axhspan(min(ref_pts), max(ref_pts), color="gray", alpha=0.2, lw=0, label=f"{ref_name} seeds range")
    ax1.set_xlabel("attention heads kept")
    ax1.set_ylabel("BLEU")
    ax1.set_title("BLEU vs heads kept")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    for ax, tol in zip(axes[1:], a.bleu_tolerance):
        draw_frontier(ax, rows, ref_bleu, tol, ref_name)
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    md = table(rows)
    ct = control_table(rows)
    if ct:
        md += f"\n\nReferences (every \"within x BLEU\" below is of {ref_name}, {ref_bleu:.2f}):\n\n" + ct
    kt = matched_k_table(rows)
    if kt:
        md += "\n\nMatched table (K per row, method per column):\n\n" + kt
    md += "\n\nEfficient frontier (Pareto: no other point of the method has fewer or equal heads and more sparsity):\n\n"
    md += "\n\n".join(frontier_table(rows, ref_bleu, tol, ref_name) for tol in a.bleu_tolerance)
    matched = matched_table(rows)
    if matched:
        md += "\n\nMatched head counts (each NeuroPrune point next to the DSP point with the nearest head count):\n\n" + matched
    print(md)
    if a.table:
        Path(a.table).write_text(md + "\n")
    print(f"wrote {a.out} ({len(rows)} points, methods: {', '.join(methods)})")


if __name__ == "__main__":
    main()
