"""Issue 22's GLUE tables and plots from ``scripts/glue_figures.sh`` rows (``results/glue_figures.jsonl``):

    python scripts/glue_figures_table.py results/glue_figures.jsonl --data-dir ../shared/data/glue \\
        --out results/glue_figures.md --plot results/glue_figures.png

* **Fig. 4's analogue** (metric vs target sparsity S): dense, NeuroPrune (penalty-driven), l1, CoFi per task.
* **Fig. 5's analogue** (metric vs heads kept K of 72): NeuroPrune ``target_heads``, DSP joint, Michel.

Each task's block starts with the majority-class score on the dev set (from ``--data-dir``) and the dense
model's score before fine-tuning. A cell is ``metric`` (seed 1), ``metric / metric`` where two seeds ran;
then the measured sparsity (share of the dense model's attention + MLP matrix weights zero or removed),
heads kept, train seconds and evaluation examples per second (1 thread, runs sharing the machine).
Rows are matched by their tag: ``fig-<method><point>-s<seed>``.
"""
import argparse
import functools
import json
import re
from collections import Counter
from typing import Dict, List, Optional, Tuple

from neuroprune_fairseq.hf.glue import compute_metrics, get_task, load_split
from neuroprune_fairseq.recipes.hf_table import main_metric

SPARSITY_METHODS = (("dense", "dense"), ("np", "NeuroPrune"), ("l1", "l1"), ("cofi", "CoFi"))
HEAD_METHODS = (("npK", "NeuroPrune target_heads"), ("dsp", "DSP joint"), ("michel", "Michel"))
# the method is one of the known keys, longest first: "fig-l150-s1" is l1 at S = 50 (a lazy
# ``[a-zA-Z0-9]+?`` read it as method "l" at 150), "fig-npK36-s1" is npK, not np
_KEYS = sorted((k for k, _ in SPARSITY_METHODS + HEAD_METHODS), key=len, reverse=True)
TAG = re.compile(rf"^fig-(?P<method>{'|'.join(map(re.escape, _KEYS))})(?P<point>\d+)?-s(?P<seed>\d+)$")


def index(rows) -> Dict[str, Dict[tuple, Dict[int, dict]]]:
    """{task: {(method, point or None): {seed: row}}}; a later row for the same tag wins."""
    out: Dict[str, Dict[tuple, Dict[int, dict]]] = {}
    for r in rows:
        m = TAG.match(str(r.get("tag", "")))
        if not m:
            continue
        point = int(m["point"]) if m["point"] else None
        out.setdefault(r["task"], {}).setdefault((m["method"], point), {})[int(m["seed"])] = r
    return out


@functools.lru_cache(maxsize=None)
def majority(task_name: str, data_dir: Optional[str]) -> Optional[Dict[str, float]]:
    """The dev metrics of predicting the most frequent training label for every example (read once per
    task and folder: both tables and the plot ask)."""
    if not data_dir:
        return None
    task = get_task(task_name)
    if task.labels is None:
        return None
    top = Counter(y for _, y in load_split(task, "train", data_dir)).most_common(1)[0][0]
    labels = [y for _, y in load_split(task, "dev", data_dir)]
    return compute_metrics(task, [top] * len(labels), labels)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def cell(runs: Dict[int, dict], metric: str) -> List[str]:
    if not runs:
        return ["-"] * 5
    seeds = sorted(runs)
    first = runs[seeds[0]]
    return [" / ".join(_pct(runs[s][metric]) for s in seeds), f"{first['sparsity']:.1f}",
            f"{first['heads_kept']}/{first['heads_dense']}", f"{first['train_time_s']:.0f}", f"{first['eval_examples_per_s']}"]


def _majority_note(task: str, data_dir, metric: str) -> Optional[str]:
    try:
        maj = majority(task, data_dir)
    except FileNotFoundError as e:
        return f"majority class not computed ({e})"
    return f"majority class {_pct(maj[metric])}" if maj else None


def task_header(task: str, runs, data_dir) -> Tuple[str, str]:
    some = next(r for by_seed in runs.values() for r in by_seed.values())
    metric = main_metric(some)
    dense = runs.get(("dense", None), {})
    before = dense[min(dense)]["before"].get(metric) if dense and dense[min(dense)].get("before") else None
    epochs = f"{some['epochs']:g}" if some.get("epochs") is not None else "?"
    bits = [f"**{task}** ({metric}, dev set, {some.get('train_samples', '?')} training examples, {epochs} epoch(s))",
            _majority_note(task, data_dir, metric)]
    if before is not None:
        bits.append(f"dense before fine-tuning {_pct(before)}")
    bits = [b for b in bits if b]
    return metric, "; ".join(bits)


def table(idx, methods, points, label: str, data_dir, need_method: bool) -> str:
    """One block per task that has a row of ``methods`` (``need_method``: other than dense)."""
    lines = []
    for task, runs in idx.items():
        if not any(k[0] in dict(methods) and (k[0] != "dense" or not need_method) for k in runs):
            continue
        metric, head = task_header(task, runs, data_dir)
        lines += [head, "", f"| method | {label} | {metric} (seed 1 / 2) | sparsity % | heads | train s | eval ex/s |",
                  "|---|---|---|---|---|---|---|"]
        if ("dense", None) in runs:
            lines.append("| dense | - | " + " | ".join(cell(runs[("dense", None)], metric)) + " |")
        for p in points:
            for key, name in methods:
                if key != "dense" and (key, p) in runs:
                    lines.append(f"| {name} | {p} | " + " | ".join(cell(runs[(key, p)], metric)) + " |")
        lines.append("")
    return "\n".join(lines)


def plot_points(runs, key: str, x: str, metric: str) -> List[Tuple[float, float, List[float]]]:
    """``(x, mean metric, [metric per seed])`` per point of ``key``, in x order (metric in %); x is the
    measured value (sparsity %, heads kept) of the first seed."""
    out = []
    for (k, _), by_seed in runs.items():
        if k == key:
            seeds = sorted(by_seed)
            ys = [100 * by_seed[s][metric] for s in seeds]
            out.append((by_seed[seeds[0]][x], sum(ys) / len(ys), ys))
    return sorted(out)


def plot(idx, out: str, data_dir: Optional[str] = None) -> None:
    """Top row: metric vs measured sparsity (0-100%), bottom row: metric vs heads kept (0 to the dense
    count). A line joins the seed means, each seed is a marker; the dense fine-tuned model is a star at
    sparsity 0 / all heads with a dotted line, the majority class a dashed line (with ``data_dir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(idx)
    fig, axes = plt.subplots(2, len(tasks), figsize=(4 * len(tasks), 6.4), squeeze=False)
    for col, task in enumerate(tasks):
        runs = idx[task]
        some = next(r for s in runs.values() for r in s.values())
        metric, heads_dense = main_metric(some), some["heads_dense"]
        try:
            maj = majority(task, data_dir)
        except FileNotFoundError:
            maj = None
        dense = sorted(100 * r[metric] for r in runs.get(("dense", None), {}).values())
        for row, (methods, x, xlabel, dense_x, xlim) in enumerate((
                (SPARSITY_METHODS, "sparsity", "sparsity %", 0.0, (-3, 100)),
                (HEAD_METHODS, "heads_kept", "heads kept", heads_dense, (0, heads_dense + 3)))):
            ax = axes[row][col]
            drawn = False
            for key, name in methods:
                if key == "dense":
                    continue
                pts = plot_points(runs, key, x, metric)
                if not pts:
                    continue
                drawn = True
                line, = ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-" if key in ("np", "npK") else "s--",
                                label=name, markersize=4)
                for px, _, ys in pts:
                    if len(ys) > 1:
                        ax.plot([px] * len(ys), ys, "_", color=line.get_color(), markersize=9)
            if dense:
                mean = sum(dense) / len(dense)
                ax.axhline(mean, color="gray", ls=":", lw=1)
                ax.plot([dense_x] * len(dense), dense, "*", color="black", label="dense (fine-tuned)")
            if maj:
                ax.axhline(100 * maj[metric], color="tab:red", ls="--", lw=0.8, label="majority class")
            if not drawn:
                ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", va="center", color="gray")
            ax.set(title=task, xlabel=xlabel, ylabel=metric, xlim=xlim)
    fig.tight_layout()
    for row in range(2):  # one legend per row, right of the panels (in a panel it hides points)
        legend = {}
        for ax in axes[row]:
            for h, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, h)
        if legend:
            box = axes[row][-1].get_position()
            fig.legend(list(legend.values()), list(legend), fontsize=8, loc="center left",
                       bbox_to_anchor=(box.x1 + 0.01, (box.y0 + box.y1) / 2))
    fig.savefig(out, dpi=110, bbox_inches="tight")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="glue_figures.sh results (JSON lines)")
    p.add_argument("--data-dir", help="glue folder, for the majority-class scores (default: not shown)")
    p.add_argument("--out", help="write the Markdown here (default: print)")
    p.add_argument("--plot", help="PNG: metric vs sparsity (top) and vs heads kept (bottom), per task")
    args = p.parse_args(argv)
    rows = [json.loads(line) for path in args.files for line in open(path) if line.strip()]
    idx = index(rows)
    if not idx:
        raise SystemExit(f"no fig-<method><point>-s<seed> rows in {', '.join(args.files)}")
    text = ("### Fig. 4's analogue: metric vs target sparsity\n\n"
            + table(idx, SPARSITY_METHODS, (25, 50, 70, 90), "S", args.data_dir, need_method=False)
            + "\n### Fig. 5's analogue: metric vs heads kept (of 72)\n\n"
            + table(idx, (("dense", "dense"),) + HEAD_METHODS, (18, 36, 54), "K", args.data_dir, need_method=True))
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text)
    if args.plot:
        plot(idx, args.plot, args.data_dir)


if __name__ == "__main__":
    main()
