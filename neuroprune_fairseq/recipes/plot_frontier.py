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
         vs heads kept for the models within that many BLEU of the dense model (Fig. 6 right),
         with each method's Pareto frontier (fewer heads, more sparsity).
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

STYLE = {"dense": ("black", "*"), "neuroprune": ("tab:blue", "o"), "l1": ("tab:orange", "s"), "dsp": ("tab:green", "^"),
         "dsp-joint": ("tab:green", "^"), "dsp-pipelined": ("tab:olive", "v"), "michel": ("tab:red", "P"),
         "dsp-pipelined-noft": ("tab:gray", "v"), "michel-noft": ("tab:pink", "P")}
EXTRA = ["tab:purple", "tab:brown", "tab:cyan", "gold", "navy", "lime"]
METRICS = [("BLEU", "bleu", "{:.2f}"), ("sparsity %", "sparsity", "{:.2f}"), ("train s", "train_wall_s", "{:.0f}"),
           ("gen sent/s", "gen_sentences_per_s", "{:.1f}")]


def load(paths):
    rows = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("bleu") is not None and r.get("heads_kept") is not None:
                    r["method"] = label(r)
                    rows.append(r)
    return rows


def label(r):
    """scripts/sweep_dsp.py rows (they carry ``mode``) prune without fine-tuning afterwards."""
    m = r["method"]
    if "mode" in r and m in ("dsp", "michel"):
        return f"dsp-{r['mode']}-noft" if m == "dsp" and r.get("mode") == "pipelined" else \
            f"dsp-{r['mode']}" if m == "dsp" else "michel-noft"
    return m


def methods_of(rows):
    order = ["dense", "neuroprune", "l1", "dsp-joint", "dsp-pipelined", "michel"]
    return sorted({r["method"] for r in rows}, key=lambda m: (order.index(m) if m in order else len(order), m))


def k_rows(rows):
    return [r for r in rows if r.get("K") is not None and r["method"] != "dense"]


def cell(vals, fmt):
    """One value, or ``mean (v1 / v2 ...)`` over seeds (ordered by seed)."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return ""
    if len(vals) == 1:
        return fmt.format(vals[0])
    return fmt.format(sum(vals) / len(vals)) + " (" + " / ".join(fmt.format(v) for v in vals) + ")"


def k_table(rows, title, key, fmt):
    """K per row, method per column; several seeds: mean (seed 1 / seed 2 ...)."""
    rs = k_rows(rows)
    if not rs:
        return ""
    ms = methods_of(rs)
    out = [f"**{title}**", "", "| K | " + " | ".join(ms) + " |", "|---|" + "---|" * len(ms)]
    for k in sorted({r["K"] for r in rs}, reverse=True):
        cells = []
        for m in ms:
            pts = sorted((r for r in rs if r["K"] == k and r["method"] == m), key=lambda r: r.get("seed") or 0)
            cells.append(cell([r.get(key) for r in pts], fmt))
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    seeds = sorted({r.get("seed") or 1 for r in rs})
    return "\n".join(out) + ("\n\n(seeds " + ", ".join(map(str, seeds)) + ": mean, then each seed in order)" if len(seeds) > 1 else "")


def matched_k_table(rows):
    return "\n\n".join(t for t in (k_table(rows, title, key, fmt) for title, key, fmt in METRICS) if t)


def frontier_points(rows, ref_bleu, tol):
    """Points within ``tol`` BLEU of ``ref_bleu`` with a sparsity: {method: [row, ...]}, by heads."""
    out = {}
    for r in rows:
        if r["bleu"] >= ref_bleu - tol and r.get("sparsity") is not None:
            out.setdefault(r["method"], []).append(r)
    return {m: sorted(v, key=lambda r: (r["heads_kept"], -r["sparsity"])) for m, v in out.items()}


def frontier_table(rows, ref_bleu, tol):
    pts = frontier_points(rows, ref_bleu, tol)
    out = [f"**within {tol:g} BLEU of dense ({ref_bleu:.2f})**", "", "| method | K | seed | heads | sparsity % | BLEU | Pareto |",
           "|---|---|---|---|---|---|---|"]
    for m in methods_of([r for v in pts.values() for r in v]):
        front = set(upper_frontier([(r["heads_kept"], r["sparsity"]) for r in pts[m]]))
        for r in pts[m]:
            out.append(f"| {m} | {r.get('K', '')} | {r.get('seed', '')} | {r['heads_kept']} | {r['sparsity']:.2f} | "
                       f"{r['bleu']:.2f} | {'*' if (r['heads_kept'], r['sparsity']) in front else ''} |")
    if len(out) == 4:
        out.append("| (none) | | | | | | |")
    return "\n".join(out)


def style(method, seen):
    if method not in STYLE:
        STYLE[method] = (EXTRA[len(seen) % len(EXTRA)], "D")
        seen.add(method)
    return STYLE[method]


def upper_frontier(pts):
    """Points not dominated in (fewer-or-equal heads, higher-or-equal y), sorted by heads."""
    best = []
    for x, y in sorted(pts, key=lambda p: (p[0], -p[1])):
        if not best or y > best[-1][1]:
            best.append((x, y))
    return best


def table(rows):
    cols = ["method", "alpha", "beta", "theta", "K", "seed", "epochs", "bleu", "heads_kept", "sparsity", "flops_ratio", "params",
            "train_wall_s", "gen_sentences_per_s", "n_hyps", "n_refs"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: (r["method"] != "dense", r["method"], -(r.get("bleu") or 0))):
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, float):
                v = f"{v:.4g}" if c in ("alpha", "beta", "theta") else f"{v:.3f}" if c == "flops_ratio" else f"{v:.2f}"
            cells.append("" if v is None else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def matched_table(rows, a="neuroprune", b=None):
    """Method ``a``'s points next to method ``b``'s point with the nearest head count (``b``:
    the first DSP variant present: dsp-joint, dsp, dsp-pipelined, dsp-pipelined-noft)."""
    if b is None:
        present = {r["method"] for r in rows}
        b = next((m for m in ("dsp-joint", "dsp", "dsp-pipelined", "dsp-pipelined-noft") if m in present), "dsp")
    ra = sorted((r for r in rows if r["method"] == a), key=lambda r: -r["heads_kept"])
    rb = [r for r in rows if r["method"] == b]
    if not ra or not rb:
        return ""
    paired = [("sparsity %", "sparsity"), ("train s", "train_wall_s"), ("gen sent/s", "gen_sentences_per_s")]
    head = [f"{a} heads", f"{a} BLEU", f"{b} BLEU", f"{b} heads"] + [f"{m} {label}" for label, _ in paired for m in (a, b)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def fmt(v):
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    for r in ra:
        m = min(rb, key=lambda x: (abs(x["heads_kept"] - r["heads_kept"]), -x["bleu"]))
        cells = [r["heads_kept"], r["bleu"], m["bleu"], m["heads_kept"]]
        for _, k in paired:
            cells += [r.get(k), m.get(k)]
        out.append("| " + " | ".join(fmt(c) for c in cells) + " |")
    return "\n".join(out)


def draw_frontier(ax, rows, ref_bleu, tol, dense):
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
    ax.set_title(f"efficient frontier: within {tol:g} BLEU of {'dense' if dense else 'best'} ({ref_bleu:.2f})\n"
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
                   help="'similar BLEU': within this of the dense BLEU; one frontier panel per value")
    p.add_argument("--title", default="")
    p.add_argument("--table", help="also write the markdown tables here")
    a = p.parse_args(argv)
    rows = load(a.results)
    if not rows:
        raise SystemExit("no results with bleu and heads_kept")
    methods = methods_of(rows)
    dense = [r for r in rows if r["method"] == "dense"]
    ref_bleu = max(r["bleu"] for r in dense) if dense else max(r["bleu"] for r in rows)
    seen = set()
    fig, axes = plt.subplots(1, 1 + len(a.bleu_tolerance), figsize=(6 * (1 + len(a.bleu_tolerance)), 4.8))
    ax1 = axes[0]
    for m in methods:
        color, marker = style(m, seen)
        mr = [r for r in rows if r["method"] == m]
        xs, ys = [r["heads_kept"] for r in mr], [r["bleu"] for r in mr]
        ax1.scatter(xs, ys, c=color, marker=marker, s=90 if m == "dense" else 45, label=f"{m} ({len(mr)})", zorder=3)
        if m == "dense" or len(mr) < 2:
            continue
        if all(r.get("K") is not None for r in mr):  # budgets: mean over seeds at each K
            ks = sorted({r["K"] for r in mr})
            line = [(sum(r["heads_kept"] for r in mr if r["K"] == k) / sum(1 for r in mr if r["K"] == k),
                     sum(r["bleu"] for r in mr if r["K"] == k) / sum(1 for r in mr if r["K"] == k)) for k in ks]
        else:
            line = upper_frontier(list(zip(xs, ys)))
        ax1.plot([f[0] for f in line], [f[1] for f in line], c=color, alpha=0.6)
    if dense:
        ax1.axhline(ref_bleu, c="black", ls=":", lw=1)
    ax1.set_xlabel("attention heads kept")
    ax1.set_ylabel("BLEU")
    ax1.set_title("BLEU vs heads kept")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    for ax, tol in zip(axes[1:], a.bleu_tolerance):
        draw_frontier(ax, rows, ref_bleu, tol, bool(dense))
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    md = table(rows)
    kt = matched_k_table(rows)
    if kt:
        md += "\n\nMatched table (K per row, method per column):\n\n" + kt
    md += "\n\nEfficient frontier (Pareto: no other point of the method has fewer or equal heads and more sparsity):\n\n"
    md += "\n\n".join(frontier_table(rows, ref_bleu, tol) for tol in a.bleu_tolerance)
    matched = matched_table(rows)
    if matched:
        md += "\n\nMatched head counts (each NeuroPrune point next to the DSP point with the nearest head count):\n\n" + matched
    print(md)
    if a.table:
        Path(a.table).write_text(md + "\n")
    print(f"wrote {a.out} ({len(rows)} points, methods: {', '.join(methods)})")


if __name__ == "__main__":
    main()
