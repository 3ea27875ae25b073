"""Topology report of one or more checkpoints: what the paper shows in Fig. 1-3 and 7-10.

    python -m neuroprune_fairseq.topology --path CKPT --out DIR [--compare CKPT2 ...] \
        [--labels dense np ...] [--eps 1e-4] [--data DATA_BIN] [--removed-neurons zero|skip] \
        [--heatmap-modules NAME ...] [--overwrite]

CKPT is a fairseq checkpoint of this project (dense, pruned, finalised, DSP/Michel-finalised)
or a HuggingFace folder: one written by ``neuroprune_fairseq.hf.save_pruned`` or a plain
``save_pretrained`` folder. Writes ``DIR/topology.json`` and the figures ``degrees.png``,
``heatmap_attention.png``, ``heatmap_mlp.png``, ``heads.png``, ``sparsity.png``; nothing is
changed in the checkpoints. Per MLP block: neuron degrees (entries with ``|w| >= eps`` in fc1
row i plus fc2 column i), their mean / sd / exact histogram, dead neurons; per attention
module: heads kept and which original head positions survive (when the checkpoint records
it, else ``"unknown"``), zeroed input groups (columns of [Q;K;V]); sparsity per module: exactly
zero or removed relative to the dense size.
"""
import argparse
import json
import logging
import math
import os
import sys
from typing import Dict, List, Sequence

import torch

from ..core.sparsity import sparsity_report
from ..core.topology import (degree_stats, dead_mlp_neurons, mlp_neuron_degrees, zero_cols, zero_input_groups,
                            zero_rows, zeroed_heads)
from .topology_views import AttnView, Loaded, MlpView, load_any

FIGURES = ("degrees.png", "heatmap_attention.png", "heatmap_mlp.png", "heads.png", "sparsity.png")
REPORT = "topology.json"


# ----------------------------------------------------------------------------- report
def _sparsity(weights: Sequence[torch.Tensor], dense: int) -> Dict:
    r = sparsity_report(weights, dense)
    return {"sparsity": r.sparsity, "weights_dense": r.dense, "weights_present": r.present, "weights_zero": r.zero}


def attention_report(a: AttnView, eps: float) -> Dict:
    heads = a.q.shape[0] // a.head_dim
    zeroed = zeroed_heads(a.q, a.k, a.v, a.out, a.head_dim)
    groups = zero_input_groups(a.q, a.k, a.v)
    return {
        "name": a.name, "kind": a.kind, "head_dim": a.head_dim,
        "heads_dense": a.dense_heads, "heads_present": heads, "heads_kept": heads - len(zeroed),
        "kept_positions": a.kept_positions if a.kept_positions is not None else "unknown",
        "zeroed_heads": zeroed,
        "input_groups": a.q.shape[1],
        "zero_input_groups": len(groups), "zero_input_group_indices": groups,
        "small_input_groups": len(zero_input_groups(a.q, a.k, a.v, eps)),
        "zero_rows": {r: len(zero_rows(w)) for r, w in (("q", a.q), ("k", a.k), ("v", a.v))},
        "zero_cols_out": len(zero_cols(a.out)),
        **_sparsity([a.q, a.k, a.v, a.out], a.dense_weights),
    }


def mlp_degrees(m: MlpView, eps: float, removed: str) -> torch.Tensor:
    """Degrees of the neurons present; with ``removed='zero'`` a removed neuron counts as a
    neuron of degree 0 (it has no connection left), so finalised and unfinalised checkpoints
    describe the same ``d_e`` neurons."""
    deg = mlp_neuron_degrees(m.fc1, m.fc2, eps)
    gone = m.dense_neurons - deg.numel()
    return torch.cat([deg, deg.new_zeros(gone)]) if removed == "zero" and gone > 0 else deg


def mlp_report(m: MlpView, eps: float, removed: str) -> Dict:
    present = m.fc2.shape[1]
    dead = dead_mlp_neurons(m.fc1, m.fc2)
    return {
        "name": m.name, "kind": m.kind,
        "neurons_dense": m.dense_neurons, "neurons_present": present, "neurons_removed": m.dense_neurons - present,
        "degree_max_possible": sum(w.shape[1] for w in m.fc1) + m.fc2.shape[0],
        "degree": degree_stats(mlp_degrees(m, eps, removed)),
        "dead_neurons": len(dead), "dead_neuron_indices": dead,
        "zero_rows_fc1": len(zero_rows(m.fc1[0])) if len(m.fc1) == 1 else None,
        "zero_cols_fc2": len(zero_cols(m.fc2)),
        **_sparsity(m.fc1 + [m.fc2], m.dense_weights),
    }


def checkpoint_report(c: Loaded, label: str, eps: float, removed: str) -> Dict:
    attn = [attention_report(a, eps) for a in c.attention]
    mlp = [mlp_report(m, eps, removed) for m in c.mlp]
    weights = [w for a in c.attention for w in (a.q, a.k, a.v, a.out)] + [w for m in c.mlp for w in m.fc1 + [m.fc2]]
    dense = sum(a.dense_weights for a in c.attention) + sum(m.dense_weights for m in c.mlp)
    all_deg = torch.cat([mlp_degrees(m, eps, removed) for m in c.mlp]) if c.mlp else torch.zeros(0, dtype=torch.long)
    summary = {
        **_sparsity(weights, dense),
        "heads_kept": sum(a["heads_kept"] for a in attn), "heads_present": sum(a["heads_present"] for a in attn),
        "heads_dense": sum(a["heads_dense"] for a in attn), "heads_per_module": [a["heads_kept"] for a in attn],
        "head_positions": c.positions_source if any(a["kept_positions"] == "unknown" for a in attn) or
        c.positions_source != "not recorded" else "all heads present",
        "mlp_neurons_present": sum(m["neurons_present"] for m in mlp), "mlp_neurons_dense": sum(m["neurons_dense"] for m in mlp),
        "mlp_degree": degree_stats(all_deg),
        "dead_neurons": sum(m["dead_neurons"] for m in mlp),
        "zero_input_groups": sum(a["zero_input_groups"] for a in attn), "input_groups": sum(a["input_groups"] for a in attn),
        "structure": c.structure,
    }
    return {"label": label, "path": c.path, "format": c.format, "summary": summary, "attention": attn, "mlp": mlp}


def default_labels(paths: Sequence[str]) -> List[str]:
    labels = [os.path.basename(os.path.normpath(p)) for p in paths]
    if len(set(labels)) < len(labels):
        labels = [os.path.join(os.path.basename(os.path.dirname(os.path.abspath(p))), lab) for p, lab in zip(paths, labels)]
    return labels


def format_summary(report: Dict) -> str:
    from ..core.structure import format_structure

    lines = []
    for c in report["checkpoints"]:
        s, d = c["summary"], c["summary"]["mlp_degree"]
        lines.append(
            f"{c['label']}: sparsity {s['sparsity']:.2f}% | heads {s['heads_kept']}/{s['heads_dense']} "
            f"(positions {s['head_positions']}) | MLP neurons {s['mlp_neurons_present']}/{s['mlp_neurons_dense']}, "
            f"degree mean {d['mean']:.2f} sd {d['sd']:.2f} min {d['min']} max {d['max']} | dead neurons "
            f"{s['dead_neurons']} | zeroed input groups {s['zero_input_groups']}/{s['input_groups']}"
            + (f"\n  structure: {format_structure(s['structure'])}" if s.get("structure") else ""))
    return "\n".join(lines)


def main(argv=None) -> Dict:
    """Run the command; returns the report (what ``topology.json`` holds)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, help="fairseq checkpoint (.pt) or HF folder (save_pruned / save_pretrained)")
    p.add_argument("--compare", nargs="+", default=[], help="more checkpoints / folders, overlaid in the figures")
    p.add_argument("--labels", nargs="+", default=None, help="one label per checkpoint (--path first); default: file names")
    p.add_argument("--out", required=True, help="output folder for topology.json and the PNG figures")
    p.add_argument("--eps", type=float, default=1e-4, help="a connection counts in a neuron's degree when |w| >= eps (default 1e-4, the paper's)")
    p.add_argument("--data", default=None, help="fairseq data-bin directory, if the checkpoint's own is not reachable from here")
    p.add_argument("--removed-neurons", choices=["zero", "skip"], default="zero",
                   help="MLP neurons finalize removed: count as degree 0 (default) or leave out of the degree statistics")
    p.add_argument("--heatmap-modules", nargs="+", default=None,
                   help="attention / MLP module names for the heat maps (default: the middle encoder layer's)")
    p.add_argument("--overwrite", action="store_true", help="replace existing report files in --out")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    paths = [a.path] + a.compare
    if a.labels is not None and len(a.labels) != len(paths):
        p.error(f"--labels got {len(a.labels)} labels for {len(paths)} checkpoints (--path plus --compare)")
    if not (math.isfinite(a.eps) and a.eps >= 0):
        p.error(f"--eps must be a finite number >= 0, got {a.eps}")
    existing = [f for f in (REPORT,) + FIGURES if os.path.exists(os.path.join(a.out, f))]
    if existing and not a.overwrite:
        p.error(f"{a.out} already holds {existing}; pass --overwrite or choose another --out")
    try:
        from .topology_plots import check_modules, plot_all
    except ImportError as e:
        p.error(f"the figures need matplotlib ({e}); install it with pip install -e .[plot]")

    labels = a.labels or default_labels(paths)
    try:
        loaded = [load_any(path, a.data) for path in paths]
        check_modules(loaded, a.heatmap_modules)
    except (FileNotFoundError, ValueError) as e:
        print(f"neuroprune-topology: error: {e}", file=sys.stderr)
        sys.exit(2)
    logging.getLogger().setLevel(logging.WARNING)  # fairseq's import turns the root logger up
    report = {"eps": a.eps, "removed_neurons": a.removed_neurons,
              "checkpoints": [checkpoint_report(c, lab, a.eps, a.removed_neurons) for c, lab in zip(loaded, labels)]}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, REPORT), "w") as f:
        json.dump(report, f, indent=1)
    written = plot_all(loaded, report, a.out, a.eps, a.heatmap_modules)
    print(format_summary(report))
    print(f"wrote {os.path.join(a.out, REPORT)} and {', '.join(written)}")
    return report


def cli_main(argv=None) -> int:
    """Console entry point ``neuroprune-topology``: exit status 0 (2 on bad input)."""
    main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
