#!/usr/bin/env python
"""Plot sweep results (JSON lines from scripts/sweep.py, scripts/sweep_dsp.py, ...).

    python scripts/plot_frontier.py results/multi30k_sweep.jsonl [more.jsonl] --out results/multi30k_frontier.png

Draws every ``method`` found (dense, neuroprune, l1, dsp, anything else):
  left:  BLEU vs heads kept (each method's upper frontier as a line);
  right: the efficient frontier at similar BLEU: sparsity (%) vs heads kept for the points
         within ``--bleu-tolerance`` BLEU of the dense model (default 1.0), with each
         method's Pareto frontier (fewer heads, more sparsity).
Also prints the results as a markdown table (``--table`` writes it to a file).
"""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"dense": ("black", "*"), "neuroprune": ("tab:blue", "o"), "l1": ("tab:orange", "s"), "dsp": ("tab:green", "^")}
EXTRA = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]


def load(paths):
    rows = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("bleu") is not None and r.get("heads_kept") is not None:
                    rows.append(r)
    return rows


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
    cols = ["method", "alpha", "beta", "theta", "K", "bleu", "heads_kept", "sparsity", "flops_ratio", "params",
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


def matched_table(rows, a="neuroprune", b="dsp"):
    """Method ``a``'s points next to method ``b``'s point with the nearest head count."""
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--out", default="results/frontier.png")
    p.add_argument("--bleu-tolerance", type=float, default=1.0, help="'similar BLEU': within this of the dense BLEU")
    p.add_argument("--title", default="")
    p.add_argument("--table", help="also write the markdown table here")
    a = p.parse_args(argv)
    rows = load(a.results)
    if not rows:
        raise SystemExit("no results with bleu and heads_kept")
    methods = sorted({r["method"] for r in rows}, key=lambda m: (m != "dense", m))
    dense = [r for r in rows if r["method"] == "dense"]
    ref_bleu = max(r["bleu"] for r in dense) if dense else max(r["bleu"] for r in rows)
    seen = set()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for m in methods:
        color, marker = style(m, seen)
        mr = [r for r in rows if r["method"] == m]
        xs, ys = [r["heads_kept"] for r in mr], [r["bleu"] for r in mr]
        ax1.scatter(xs, ys, c=color, marker=marker, s=90 if m == "dense" else 45, label=f"{m} ({len(mr)})", zorder=3)
        if m != "dense" and len(mr) > 1:
            fr = upper_frontier(list(zip(xs, ys)))
            ax1.plot([f[0] for f in fr], [f[1] for f in fr], c=color, alpha=0.6)
        near = [r for r in mr if r["bleu"] >= ref_bleu - a.bleu_tolerance and r.get("sparsity") is not None]
        if near:
            ax2.scatter([r["heads_kept"] for r in near], [r["sparsity"] for r in near], c=color, marker=marker,
                        s=90 if m == "dense" else 45, label=m, zorder=3)
            if m != "dense" and len(near) > 1:
                fr = upper_frontier([(r["heads_kept"], r["sparsity"]) for r in near])
                ax2.plot([f[0] for f in fr], [f[1] for f in fr], c=color, alpha=0.6)
            for r in near:
                ax2.annotate(f"{r['bleu']:.1f}", (r["heads_kept"], r["sparsity"]), fontsize=7,
                             xytext=(3, 3), textcoords="offset points")
    if dense:
        ax1.axhline(ref_bleu, c="black", ls=":", lw=1)
    ax1.set_xlabel("attention heads kept")
    ax1.set_ylabel("BLEU")
    ax1.set_title("BLEU vs heads kept")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("attention heads kept")
    ax2.set_ylabel("sparsity of attention + MLP weights (%)")
    ax2.set_title(f"efficient frontier: points within {a.bleu_tolerance:g} BLEU of {'dense' if dense else 'best'} ({ref_bleu:.2f})\n"
                  "(labels: BLEU)", fontsize=10)
    ax2.grid(alpha=0.3)
    if ax2.collections:
        ax2.legend(fontsize=8)
    else:
        ax2.text(0.5, 0.5, "no point within the tolerance", transform=ax2.transAxes, ha="center")
    if a.title:
        fig.suptitle(a.title)
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=120)
    md = table(rows)
    matched = matched_table(rows)
    if matched:
        md += "\n\nMatched head counts (each NeuroPrune point next to the DSP point with the nearest head count):\n\n" + matched
    print(md)
    if a.table:
        Path(a.table).write_text(md + "\n")
    print(f"wrote {a.out} ({len(rows)} points, methods: {', '.join(methods)})")


if __name__ == "__main__":
    main()
