"""scripts/sweep.py drives --np-proximal / --np-target-sparsity points (issue 9, item 4)."""
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _sweep():
    from neuroprune_fairseq.recipes import sweep

    return sweep


def test_target_points_expand_resume_and_flags(tmp_path):
    sweep = _sweep()
    cfg = sweep.load_config(REPO / "examples" / "multi30k_cpu" / "sweep_sparsity.json")
    pts = sweep.expand(cfg["grid"])
    assert [p["target_sparsity"] for p in pts if p["method"] == "neuroprune"] == [25, 50, 70, 80, 90, 95]
    assert {p["method"] for p in pts} == {"neuroprune", "l1"} and all(p["proximal"] for p in pts)
    assert sweep.sparsify_args(pts[1], {}) == ["--np-proximal", "--np-prox-metric", "euclidean", "--np-target-sparsity",
                                               "50", "--np-target-mode", "cut"]
    assert sweep.sparsify_args(pts[1], {"target_end": 0.6})[-2:] == ["--np-target-end", "0.6"]
    # a point differs from the same alpha/beta/theta without a target (and from another target)
    res = tmp_path / "r.jsonl"
    base = {"finetune_epochs": 3, "dense_init": "d", "penalty_scale": "batch"}
    res.write_text(json.dumps({**pts[0], **base}) + "\n")
    done = sweep.done_keys(res)
    assert sweep.key({**pts[0], **base}) in done and sweep.key({**pts[1], **base}) not in done
    plain = {k: v for k, v in pts[0].items() if k not in ("proximal", "target_sparsity")}
    assert sweep.key({**plain, **base}) not in done
    # the command line adds the same points
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"), "--method", "l1", "--alpha", "0.5",
                          "--proximal", "--target-sparsity", "25", "90", "--no-dense", "--dry-run",
                          "--work-dir", str(tmp_path / "w"), "--results", str(tmp_path / "x.jsonl")],
                         capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["target_sparsity"], r["proximal"]) for r in rows] == [(25.0, True), (90.0, True)]


def test_penalty_mode_points_and_rows_written_before_the_mode_existed(tmp_path):
    """The issue-20 configs: a dense fine-tuned control, the penalty-driven and the cut mode; rows
    written before --np-target-mode / --np-prox-metric existed were cut-mode, Euclidean points."""
    sweep = _sweep()
    pts = sweep.expand(sweep.load_config(REPO / "examples" / "multi30k_cpu" / "structured_sparsity_lane_a.json")["grid"])
    assert pts[0] == {"method": "dense-ft", "alpha": None, "beta": None, "theta": None}
    np50 = pts[1]
    assert sweep.sparsify_args(np50, {}) == ["--np-prox-metric", "optimizer", "--np-target-heads", "54", "--np-target-epoch",
                                             "1", "--np-target-sparsity", "50", "--np-target-mode", "penalty"]
    cut = [p for p in pts if p.get("target_mode") == "cut"]
    assert cut and all(p["proximal"] for p in cut)
    old = {"method": "neuroprune", "alpha": 0.5, "beta": 0.1, "theta": 0.4, "proximal": True, "target_sparsity": 50.0,
           "finetune_epochs": 3, "dense_init": "d", "penalty_scale": "batch"}
    assert sweep.key(old) == sweep.key({**old, "target_mode": "cut", "prox_metric": "euclidean"})
    assert sweep.key(old) != sweep.key({**old, "target_mode": "penalty", "prox_metric": "optimizer"})
