"""How many heads would redundancy pruning keep at each theta, on a given checkpoint?

    python -m neuroprune_fairseq.commands.theta_scan --path ckpt/dense/checkpoint_last.pt \
        --theta 0.2 0.25 0.3 0.35 [--dominating heuristic|exact] [--data DATA_BIN] [--json out.json]

Prints, per attention module, the smallest and the median l_inf distance between two heads'
[Q, K, V] blocks and the heads Algorithm 3 would keep at every theta, then the totals. Nothing
is changed. Use it to choose the theta grid of a sweep: on trained models the pairwise head
distances of a module are concentrated (e.g. 0.24-0.27 smallest per module on a 3-epoch
Multi30k model), so "keeps everything" and "keeps one head per module" can be a few hundredths
of theta apart, and where that cliff lies depends on the model and how long it was trained.
"""
import argparse
import json
import math
import sys
from typing import Dict, List, Sequence

from torch import nn


def scan(model: nn.Module, thetas: Sequence[float], method: str = "heuristic") -> List[Dict]:
    """One row per attention module: name, heads, min/median head distance, heads kept per theta."""
    from ..core.redundancy import head_distance_matrix, min_pair_distance, pair_distances, plan_redundant_heads
    from ..fairseq_adapter.sites import attention_sites

    rows = []
    for s in attention_sites(model):
        q, k, v, h = s.q.weight.detach(), s.k.weight.detach(), s.v.weight.detach(), s.num_heads
        dist = head_distance_matrix(q, k, v, h)
        rows.append({
            "module": s.name,
            "heads": h,
            "min_dist": min_pair_distance(dist) if h > 1 else None,
            "median_dist": float(pair_distances(dist).median()) if h > 1 else None,
            "kept": {f"{t:g}": len(plan_redundant_heads(q, k, v, h, t, method, distance=dist).keep) for t in thetas},
        })
    return rows


def format_scan(rows: List[Dict], thetas: Sequence[float]) -> str:
    ts = [f"{t:g}" for t in thetas]
    out = [f"{'module':<34} {'heads':>5} {'min':>6} {'median':>6}  " + " ".join(f"t={t:>5}" for t in ts)]
    for r in rows:
        md = "-" if r["min_dist"] is None else f"{r['min_dist']:.3f}"
        me = "-" if r["median_dist"] is None else f"{r['median_dist']:.3f}"
        out.append(f"{r['module']:<34} {r['heads']:>5} {md:>6} {me:>6}  " + " ".join(f"{r['kept'][t]:>7}" for t in ts))
    out.append(f"{'total':<34} {sum(r['heads'] for r in rows):>5} {'':>6} {'':>6}  "
               + " ".join(f"{sum(r['kept'][t] for r in rows):>7}" for t in ts))
    return "\n".join(out)


def cli_main(argv=None) -> List[Dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", required=True, help="fairseq checkpoint (dense or pruned)")
    p.add_argument("--theta", type=float, nargs="+", required=True, help="one or more theta values")
    p.add_argument("--dominating", choices=["heuristic", "exact"], default="heuristic")
    p.add_argument("--data", help="data-bin directory, if the checkpoint's own is not reachable from here")
    p.add_argument("--json", help="also write the rows here")
    a = p.parse_args(argv)
    bad = [t for t in a.theta if not (math.isfinite(t) and t >= 0)]
    if bad:
        p.error(f"--theta must be finite numbers >= 0, got {bad}")
    from ..fairseq_adapter.checkpoints import load

    model = load(a.path, a.data).model
    rows = scan(model, a.theta, a.dominating)
    print(format_scan(rows, a.theta))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    sys.exit(0 if cli_main() is not None else 1)
