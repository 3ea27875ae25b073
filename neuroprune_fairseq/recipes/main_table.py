"""The main job's result table (stdout, markdown, JSON) and its frontier PNG (BLEU vs heads kept)."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Dict, List, Sequence

from .progress import fmt_s

COLUMNS = ("method", "BLEU", "heads kept", "sparsity %", "FLOPs ratio", "gen sent/s", "train time")


def set_names(rows: Sequence[Dict]) -> List[str]:
    """The test sets the rows were scored on (``bleu_sets``, the test split first)."""
    names: List[str] = []
    for r in rows:
        names += [n for n in r.get("bleu_sets") or {} if n not in names]
    return names


def columns(rows: Sequence[Dict]) -> List[str]:
    names = set_names(rows)
    return [COLUMNS[0], *([f"BLEU {n}" for n in names] or [COLUMNS[1]]), *COLUMNS[2:]]


def cells(r: Dict, names: Sequence[str] = ()) -> List[str]:
    bleu = [f"{r['bleu_sets'][n]:.2f}" if n in (r.get("bleu_sets") or {}) else "" for n in names] or [f"{r['bleu']:.2f}"]
    return [r["method"], *bleu, f"{r['heads_kept']}/{r['heads_dense']}", f"{r['sparsity']:.2f}",
            f"{r['flops_ratio']:.3f}", "?" if r.get("gen_sentences_per_s") is None else f"{r['gen_sentences_per_s']:.1f}",
            fmt_s(r["train_wall_s"])]


def markdown(rows: Sequence[Dict], title: str) -> str:
    cols, names = columns(rows), set_names(rows)
    lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cells(r, names)) + " |" for r in rows]
    lines += ["", f"sacrebleu signature: `{rows[0]['sacrebleu_signature']}`" if rows else ""]
    return "\n".join(lines) + "\n"


def plain(rows: Sequence[Dict], title: str) -> str:
    names = set_names(rows)
    table = [columns(rows)] + [cells(r, names) for r in rows]
    w = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    out = [title] + ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(row)) for row in table]
    return "\n".join(out) + f"\nsacrebleu signature: {rows[0]['sacrebleu_signature']}\n"


def plot(rows: Sequence[Dict], png: Path, title: str) -> None:
    import logging

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's import left the root logger at DEBUG
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for r in rows:
        if r["method"] == "dense":
            ax.axhline(r["bleu"], color="grey", linestyle="--", linewidth=1)
        ax.scatter([r["heads_kept"]], [r["bleu"]], zorder=3)
        ax.annotate(f"{r['method']} ({r['sparsity']:.0f}% sparse)", (r["heads_kept"], r["bleu"]),
                    textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("attention heads kept")
    ax.set_ylabel("test BLEU (sacrebleu)")
    ax.set_title("\n".join(textwrap.wrap(title, 75)), fontsize=9)
    ax.set_xlim(0, max(r["heads_dense"] for r in rows) * 1.15)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def write(rows: Sequence[Dict], work: Path, title: str) -> Dict[str, Path]:
    """Writes ``main_results.{md,json,png}`` in ``work``; returns their paths."""
    out = {ext: Path(work) / f"main_results.{ext}" for ext in ("md", "json", "png")}
    out["md"].write_text(markdown(rows, title))
    out["json"].write_text(json.dumps({"title": title, "rows": list(rows)}, indent=1))
    plot(rows, out["png"], title)
    return out
