#!/usr/bin/env python
"""The varying-sparsity table (the paper's Table 1 analogue) and its plot, from the JSON lines
of ``scripts/sweep.py`` points run with ``--np-target-sparsity`` (e.g. the grid of
``examples/multi30k_cpu/sweep_sparsity.json``).

    python scripts/sparsity_table.py results/sparsity_multi30k.jsonl [more.jsonl] \\
        --out results/sparsity_multi30k.png --table results/sparsity_multi30k.md [--dense-bleu 32.46]

One row per target S, one column group per method: BLEU, measured sparsity (exactly zero or
removed, after ``finalize``), heads kept, FLOPs ratio, generation speed and training time.
The dense reference comes from a ``method == "dense"`` row, or ``--dense-bleu``.
"""
import argparse
import json
from collections import defaultdict
from pathlib import Path

FIELDS = [("bleu", "BLEU", "{:.2f}"), ("sparsity", "sparsity %", "{:.2f}"), ("heads_kept", "heads", "{}"),
          ("flops_ratio", "FLOPs ratio", "{:.3f}"), ("gen_sentences_per_s", "gen sent/s", "{:.1f}"),
          ("train_wall_s", "train s", "{:.0f}"),
          # the split of the sparsity and the structure (rows of runs with --np-target-mode)
          ("points_removed", "points made by removed heads", "{:.2f}"),
          ("points_penalties", "points made by the penalties", "{:.2f}"),
          ("points_cut", "points made by the cut", "{:.2f}"),
          ("structured_share", "% of zeros+removed in removed structures", "{:.1f}"),
          ("structured_share_beyond_heads", "% of zeros+removed in removed structures beyond heads", "{:.1f}"),
          ("input_groups_zeroed", "zeroed input groups (of 2160)", "{}"),
          ("mlp_neurons_dead", "dead MLP neurons (of 5760)", "{}"),
          ("fc2_rows_zero", "zero fc2 rows (of 1440)", "{}"),
          ("mlp_degree_sd", "MLP degree sd (live neurons)", "{:.1f}"),
          ("blocks_1x4_at_most_2_nonzero", "% of 1x4 blocks with <= 2 non-zeros", "{:.1f}")]


def label(r) -> str:
    """A column: the method, and how its target was reached where the row says."""
    if not r.get("target_mode"):
        return r["method"]
    out = f"{r['method']} {r['target_mode']}"
    if r["target_mode"] == "cut" and r.get("proximal"):  # the proximal step's metric decides how much it zeroes
        out += " prox-lr" if r.get("prox_metric", "euclidean") == "euclidean" else " prox-adam"
    return out


def read_rows(paths):
    rows = []
    for p in paths:
        rows += [json.loads(line) for line in Path(p).read_text().splitlines() if line.strip()]
    return rows


def table(rows, dense_bleu=None) -> str:
    by = defaultdict(dict)
    methods = []
    dense_ft = None
    for r in rows:
        if r.get("method") == "dense":
            dense_bleu = r["bleu"] if dense_bleu is None else dense_bleu
            continue
        if r.get("method") == "dense-ft":
            dense_ft = r
            continue
        if r.get("target_sparsity") is None:
            continue
        by[float(r["target_sparsity"])][label(r)] = r
        if label(r) not in methods:
            methods.append(label(r))
    methods.sort()
    out = []
    if dense_bleu is not None:
        out.append(f"dense BLEU {dense_bleu:.2f} (the start)\n")
    if dense_ft is not None:
        out.append(f"dense fine-tuned BLEU {dense_ft['bleu']:.2f} (the control: the same {dense_ft.get('finetune_epochs')} "
                   f"epochs and schedule, no penalty, no pruning; FLOPs ratio {dense_ft.get('flops_ratio', 1):.3f}, "
                   f"gen {dense_ft.get('gen_sentences_per_s')} sent/s)\n")
    for key, title, fmt in FIELDS:
        if not any(r.get(key) is not None for s_ in by.values() for r in s_.values()):
            continue
        out += [f"**{title}**", "", "| target S | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for s in sorted(by):
            cells = [fmt.format(by[s][m][key]) if m in by[s] and by[s][m].get(key) is not None else "" for m in methods]
            out.append(f"| {s:g} | " + " | ".join(cells) + " |")
        out.append("")
    sig = next((r.get("sacrebleu_signature") for r in rows if r.get("sacrebleu_signature")), None)
    if sig:
        out.append(f"sacrebleu signature: `{sig}`")
    return "\n".join(out) + "\n"


COMPACT = [("bleu", "BLEU", "{:.2f}"), ("sparsity", "sparsity %", "{:.2f}"), ("heads_kept", "heads", "{}"),
           ("points_removed", "pts heads", "{:.2f}"), ("points_penalties", "pts penalties", "{:.2f}"),
           ("points_cut", "pts cut", "{:.2f}"), ("structured_share", "struct. %", "{:.1f}"),
           ("structured_share_beyond_heads", "struct. beyond heads %", "{:.1f}"),
           ("input_groups_zeroed", "groups zeroed", "{}"), ("mlp_neurons_dead", "dead neurons", "{}"),
           ("fc2_rows_zero", "zero fc2 rows", "{}"), ("mlp_degree_sd", "degree sd", "{:.1f}"),
           ("blocks_1x4_at_most_2_nonzero", "1x4 <=2 nz %", "{:.1f}"), ("flops_ratio", "FLOPs ratio", "{:.3f}")]


def compact_table(rows) -> str:
    """One line per run (the reference rows first), the columns of :data:`COMPACT`; BLEU also as
    the difference to the dense fine-tuned control where there is one."""
    ft = next((r["bleu"] for r in rows if r.get("method") == "dense-ft"), None)
    refs = [r for r in rows if r.get("method") in ("dense", "dense-ft")]
    runs = sorted((r for r in rows if r.get("target_sparsity") is not None),
                  key=lambda r: (label(r), float(r["target_sparsity"])))
    head = ["run", "S"] + [t for _, t, _ in COMPACT[:1]] + (["vs dense-ft"] if ft is not None else []) + [t for _, t, _ in COMPACT[1:]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in refs + runs:
        cells = [r["method"] if r.get("target_sparsity") is None else label(r),
                 "" if r.get("target_sparsity") is None else f"{float(r['target_sparsity']):g}"]
        vals = [fmt.format(r[k]) if r.get(k) is not None else "" for k, _, fmt in COMPACT]
        delta = [f"{r['bleu'] - ft:+.2f}"] if ft is not None else []
        out.append("| " + " | ".join(cells + vals[:1] + delta + vals[1:]) + " |")
    return "\n".join(out) + "\n"


def plot(rows, path, dense_bleu=None, title=""):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    structured = any(r.get("flops_ratio") is not None and r.get("target_mode") for r in rows)
    right = "flops_ratio" if structured else "heads_kept"
    for m in sorted({label(r) for r in rows if r.get("target_sparsity") is not None}):
        pts = sorted((r["sparsity"], r["bleu"], r[right]) for r in rows
                     if label(r) == m and r.get("target_sparsity") is not None)
        ax[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-" if "cut" not in m else "s--", label=m)
        ax[1].plot([p[0] for p in pts], [p[2] for p in pts], "o-" if "cut" not in m else "s--", label=m)
    if dense_bleu is not None:
        ax[0].axhline(dense_bleu, color="k", ls=":", label=f"dense {dense_bleu:.2f}")
    ft = next((r for r in rows if r.get("method") == "dense-ft"), None)
    if ft is not None:
        ax[0].axhline(ft["bleu"], color="grey", ls="--", label=f"dense fine-tuned {ft['bleu']:.2f}")
    ax[0].set(xlabel="sparsity of attention + MLP weights (%)", ylabel="test BLEU", title="BLEU vs sparsity")
    if structured:
        ax[1].set(xlabel="sparsity of attention + MLP weights (%)", ylabel="finalised FLOPs / dense FLOPs",
                  title="FLOPs per token (length 20)")
    else:
        ax[1].set(xlabel="sparsity of attention + MLP weights (%)", ylabel="attention heads kept", title="heads kept")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+")
    p.add_argument("--out", help="PNG to write")
    p.add_argument("--table", help="markdown file to write")
    p.add_argument("--dense-bleu", type=float, help="the dense model's BLEU when no dense row is in the results")
    p.add_argument("--title", default="")
    a = p.parse_args(argv)
    rows = read_rows(a.results)
    text = table(rows, a.dense_bleu)
    if any(r.get("target_mode") for r in rows):
        text = "**Every run** (pts: points of sparsity made by removed heads, by the penalties, by the cut; struct.: share of " \
               "zeros + removed weights that lie in removed structures)\n\n" + compact_table(rows) + "\n" + text
    print(text)
    if a.table:
        Path(a.table).write_text(text)
    if a.out:
        dense = a.dense_bleu if a.dense_bleu is not None else next((r["bleu"] for r in rows if r.get("method") == "dense"), None)
        plot(rows, a.out, dense, a.title)


if __name__ == "__main__":
    main()
