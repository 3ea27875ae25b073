"""Figures of the topology report (matplotlib, Agg): see :mod:`neuroprune_fairseq.topology`.

* ``degrees.png``           MLP neuron degree distributions per MLP kind, one curve per checkpoint (Fig. 2)
* ``heatmap_attention.png`` |W| of [Q K V] (the paper's layout: a row per input dimension) and out (Fig. 1, 8)
* ``heatmap_mlp.png``       |W| of fc1 and fc2 with a column per neuron (Fig. 1, 9, 10)
* ``heads.png``             heads kept per module and which original positions survive (Fig. 3, 7 right)
* ``sparsity.png``          sparsity per module (exactly zero or removed, relative to the dense size)

In the heat maps an exact zero is white, a nonzero |w| < eps light orange, a removed head or
neuron grey; the rest is coloured on a log scale from eps to the largest |w|.
"""
import math
import os
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

ZERO, SMALL, REMOVED = (1.0, 1.0, 1.0, 1.0), (0.99, 0.76, 0.55, 1.0), (0.72, 0.72, 0.72, 1.0)
CMAP = plt.get_cmap("viridis")


def default_modules(c) -> List[str]:
    """The middle encoder layer's attention and MLP (the paper's 'intermediate layer')."""
    names = []
    for views in (c.attention, c.mlp):
        enc = [v for v in views if v.kind == "encoder"] or list(views)
        if enc:
            names.append(enc[len(enc) // 2].name)
    return names


def check_modules(loaded, names: Optional[Sequence[str]]) -> None:
    if not names:
        return
    for c in loaded:
        known = [v.name for v in c.attention] + [v.name for v in c.mlp]
        bad = [n for n in names if n not in known]
        if bad:
            raise ValueError(f"--heatmap-modules {bad} are not attention or MLP modules of {c.path}; choose from {known}")


def _rgba(a: np.ndarray, removed: np.ndarray, norm: LogNorm, eps: float) -> np.ndarray:
    img = CMAP(norm(np.clip(a, norm.vmin, None)))
    img[(a < eps) & (a > 0)] = SMALL
    img[a == 0] = ZERO
    img[removed] = REMOVED
    return img


def _place(w: np.ndarray, units: Optional[List[int]], dense_units: int, unit: int) -> (np.ndarray, np.ndarray):
    """Put the present column blocks (``unit`` columns each) of ``w`` at their original
    positions ``units`` in a dense-width canvas (left-aligned when positions are unknown)."""
    present = w.shape[1] // unit
    units = list(range(present)) if units is None else units
    canvas = np.zeros((w.shape[0], dense_units * unit))
    removed = np.ones_like(canvas, dtype=bool)
    for i, pos in enumerate(units):
        canvas[:, pos * unit:(pos + 1) * unit] = w[:, i * unit:(i + 1) * unit]
        removed[:, pos * unit:(pos + 1) * unit] = False
    return canvas, removed


def _attention_panels(a):
    # DSP's zeroed placeholder head is physically present but not in kept_positions: left-align then
    units = a.kept_positions if a.kept_positions is not None and len(a.kept_positions) * a.head_dim == a.q.shape[0] else None
    panels = []
    for role, w in (("Q", a.q), ("K", a.k), ("V", a.v)):  # [d_attn, d] -> paper layout d x d_attn
        panels.append((f"|{role}| (input dim x head dims)", *_place(w.abs().T.numpy(), units, a.dense_heads, a.head_dim)))
    panels.append(("|out| (output dim x head dims)", *_place(a.out.abs().numpy(), units, a.dense_heads, a.head_dim)))
    return panels, a.head_dim


def _mlp_panels(m):
    panels = []
    for i, w in enumerate(m.fc1):
        name = "fc1" if len(m.fc1) == 1 else f"fc1[{i}]"
        panels.append((f"|{name}|^T (input dim x neuron)", *_place(w.abs().T.numpy(), None, m.dense_neurons, 1)))
    panels.append(("|fc2| (output dim x neuron)", *_place(m.fc2.abs().numpy(), None, m.dense_neurons, 1)))
    return panels, None


def plot_heatmaps(loaded, labels, names: Sequence[str], attention: bool, eps: float, path: str) -> None:
    rows = []
    for c, lab in zip(loaded, labels):
        views = {v.name: v for v in (c.attention if attention else c.mlp)}
        for n in names:
            if n in views:
                panels, hd = (_attention_panels if attention else _mlp_panels)(views[n])
                rows.append((f"{lab}\n{n}", panels, hd))
    if not rows:
        return
    vmax = max(float(p[1].max()) for _, ps, _ in rows for p in ps)
    norm = LogNorm(vmin=eps if eps > 0 else 1e-6, vmax=max(vmax, 2 * (eps or 1e-6)))
    ncol = len(rows[0][1])
    h0, w0 = rows[0][1][0][1].shape
    aspect = h0 / w0
    fig, axes = plt.subplots(len(rows), ncol, figsize=(3.4 * ncol + 1.2, max(2.2, 3.4 * aspect) * len(rows) + 0.9),
                             squeeze=False, gridspec_kw={"hspace": 0.35})
    for r, (title, panels, hd) in enumerate(rows):
        for j, (ptitle, w, removed) in enumerate(panels):
            ax = axes[r][j]
            ax.imshow(_rgba(w, removed, norm, eps), aspect="auto", interpolation="nearest")
            if hd:
                for x in range(hd, w.shape[1], hd):
                    ax.axvline(x - 0.5, color="black", lw=0.4, alpha=0.5)
            ax.set_title(ptitle, fontsize=8)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(title, fontsize=8)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=CMAP)
    fig.colorbar(sm, ax=axes, fraction=0.02, pad=0.01).set_label("|w|", fontsize=8)
    legend = [Patch(facecolor=ZERO, edgecolor="k", label="exactly 0"), Patch(facecolor=SMALL, label=f"0 < |w| < {eps:g}"),
              Patch(facecolor=REMOVED, label="removed" + ("" if attention else " (shown at the right)"))]
    fig.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Attention weights; lines separate heads" if attention else "MLP weights; a column per neuron", fontsize=10)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def plot_degrees(report: Dict, path: str) -> None:
    """One panel per MLP kind (encoder first), all layers pooled, one curve per checkpoint. The
    x range spans the degrees present (up to the largest possible): a dense model's narrow
    spike at the top stays readable, a spread distribution gets the full range."""
    kinds = sorted({m["kind"] for c in report["checkpoints"] for m in c["mlp"]}, key=lambda k: (k != "encoder", k))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.8), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        curves = []
        for c in report["checkpoints"]:
            blocks = [m for m in c["mlp"] if m["kind"] == kind]
            deg = np.concatenate([np.repeat(m["degree"]["histogram"]["degree"], m["degree"]["histogram"]["count"]) for m in blocks])
            curves.append((c["label"], deg, max(m["degree_max_possible"] for m in blocks)))
        top = max(t for _, _, t in curves)
        low = min(int(d.min()) for _, d, _ in curves if d.size) if any(d.size for _, d, _ in curves) else 0
        low = max(0, low - max(1, (top - low) // 20))
        width = max(1, math.ceil((top - low + 1) / 80))
        bins = np.arange(low, top + width + 1, width) - 0.5
        for i, (label, deg, _) in enumerate(curves):  # dashes keep identical curves apart
            ax.hist(deg, bins=bins, histtype="step", lw=1.6, ls=("-", "--", ":", "-.")[i % 4],
                    label=f"{label}: sd {deg.std():.2f}, mean {deg.mean():.1f} ({len(deg)} neurons)")
        ax.axvline(top, color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.7)
        ax.set_xlim(bins[0] - width, bins[-1] + width)
        ax.set_xlabel(f"neuron degree: fc1 row + fc2 column entries with |w| >= {report['eps']:g} (dotted: max {top})", fontsize=8)
        ax.set_ylabel("neurons (log)", fontsize=8)
        ax.set_title(f"{kind} MLP neurons, all layers" + (f"; bins of {width}" if width > 1 else ""), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_heads(report: Dict, path: str) -> None:
    cks = report["checkpoints"]
    n_mod = len(cks[0]["attention"])
    width = max((a["heads_dense"] for c in cks for a in c["attention"]), default=1)
    fig, axes = plt.subplots(1, len(cks), figsize=(0.45 * width * len(cks) + 3.5, 0.26 * n_mod + 1.6), squeeze=False)
    colors = {"kept": (0.15, 0.55, 0.3, 1), "removed": (1, 1, 1, 1), "unknown": (0.8, 0.8, 0.8, 1)}
    for ax, c in zip(axes[0], cks):
        img = np.ones((len(c["attention"]), width, 4))
        for r, a in enumerate(c["attention"]):
            pos = a["kept_positions"]
            if pos == "unknown":
                img[r, :a["heads_dense"]] = colors["unknown"]
                ax.text(a["heads_dense"] / 2 - 0.5, r, f"{a['heads_kept']} kept, positions not recorded",
                        ha="center", va="center", fontsize=6)
            else:
                img[r, :a["heads_dense"]] = colors["removed"]
                for h in pos:
                    img[r, h] = colors["kept"]
            extra = f" (+{len(a['zeroed_heads'])} zeroed)" if a["zeroed_heads"] else ""
            ax.text(width - 0.3, r, f" {a['heads_kept']}/{a['heads_dense']}{extra}", va="center", fontsize=6)
        ax.imshow(img, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(width))
        ax.set_xticks(np.arange(-0.5, width, 1), minor=True)
        ax.set_yticks(np.arange(-0.5, n_mod, 1), minor=True)
        ax.grid(which="minor", color="k", lw=0.3)
        ax.tick_params(which="minor", length=0)
        ax.set_yticks(range(len(c["attention"])))
        ax.set_yticklabels([a["name"] for a in c["attention"]], fontsize=6)
        ax.set_xlabel("original head position", fontsize=8)
        s = c["summary"]
        ax.set_title(f"{c['label']}: {s['heads_kept']}/{s['heads_dense']} heads kept", fontsize=9)
    legend = [Patch(facecolor=colors[k], edgecolor="k", label=lab) for k, lab in
              (("kept", "kept"), ("removed", "removed"), ("unknown", "positions not recorded"))]
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_sparsity(report: Dict, path: str) -> None:
    """Sparsity per module (x: attention modules, then MLP blocks, in model order), one marker
    line per checkpoint; the overall figure is in the legend."""
    cks = report["checkpoints"]
    n_attn = len(cks[0]["attention"])
    names = [a["name"] for a in cks[0]["attention"]] + [m["name"] for m in cks[0]["mlp"]]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(names) + 2), 4.2))
    for i, c in enumerate(cks):
        by_name = {x["name"]: x["sparsity"] for x in c["attention"] + c["mlp"]}
        ax.plot(range(len(names)), [by_name.get(n, np.nan) for n in names], marker="os^vDx"[i % 6], ms=4, lw=1,
                ls=("-", "--", ":", "-.")[i % 4], label=f"{c['label']} (all: {c['summary']['sparsity']:.2f}%)")
    ax.axvline(n_attn - 0.5, color="k", lw=0.6)
    ax.text(n_attn / 2 - 0.5, 1.01, "attention (q, k, v, out)", transform=ax.get_xaxis_transform(), ha="center", fontsize=8)
    ax.text(n_attn + (len(names) - n_attn) / 2 - 0.5, 1.01, "MLP (fc1, fc2)", transform=ax.get_xaxis_transform(),
            ha="center", fontsize=8)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_xlim(-0.7, len(names) - 0.3)
    ax.set_ylim(-2, 102)
    ax.set_ylabel("sparsity % (exactly 0 or removed,\nof the dense module's weights)", fontsize=8)
    ax.grid(axis="y", lw=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_all(loaded, report: Dict, out: str, eps: float, names: Optional[Sequence[str]]) -> List[str]:
    labels = [c["label"] for c in report["checkpoints"]]
    names = list(names) if names else default_modules(loaded[0])
    files = {"degrees.png": lambda p: plot_degrees(report, p),
             "heatmap_attention.png": lambda p: plot_heatmaps(loaded, labels, names, True, eps, p),
             "heatmap_mlp.png": lambda p: plot_heatmaps(loaded, labels, names, False, eps, p),
             "heads.png": lambda p: plot_heads(report, p),
             "sparsity.png": lambda p: plot_sparsity(report, p)}
    written = []
    for name, fn in files.items():
        fn(os.path.join(out, name))
        if os.path.exists(os.path.join(out, name)):
            written.append(name)
    return written
