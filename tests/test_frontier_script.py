"""examples/multi30k_cpu/frontier_gpu.sh: the job lines it builds and the arguments each job gets.

PYTHON is a stand-in that records the sweep_heads calls (and answers `-c` with the real Python,
which is how the script takes its default target epoch from the recipes), so no training runs.
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "examples" / "multi30k_cpu" / "frontier_gpu.sh"


def _run(tmp_path, **env):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fakepy"
    fake.write_text(f"""#!/usr/bin/env bash
case "$1" in
  -c) exec {shlex.quote(sys.executable)} "$@" ;;
  scripts/sweep_heads.py) echo "$*" >> {shlex.quote(str(calls))}; echo "BLEU 1.00 heads 9" ;;
  *) exit 0 ;;
esac
""")
    fake.chmod(0o755)
    (tmp_path / "dense.pt").write_bytes(b"")
    (tmp_path / "prep").mkdir()
    p = subprocess.run(["bash", str(SCRIPT), tmp_path / "dense.pt", tmp_path / "prep", tmp_path / "work",
                        tmp_path / "rows.jsonl"], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHON": str(fake), "JOBS": "1", **env}, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, calls.read_text().splitlines() if calls.exists() else []


def _arg(call, flag):
    toks = call.split()
    return toks[toks.index(flag) + 1] if flag in toks else None


def test_default_target_epoch_leaves_one_recovery_epoch(tmp_path):
    out, calls = _run(tmp_path, ONLY="^(neuroprune|neuroprune-S50|dsp-joint) 25 1$")
    assert "3 jobs" in out and "NeuroPrune/l1 reach K after epoch 2" in out
    by_label = {(_arg(c, "--label") or _arg(c, "--method")): c for c in calls}
    assert set(by_label) == {"neuroprune-r1", "neuroprune-S50-r1", "dsp-joint"}
    assert _arg(by_label["neuroprune-r1"], "--target-epoch") == "2"
    assert _arg(by_label["neuroprune-r1"], "--epochs") == "3"
    assert "--np-target-sparsity 50" in by_label["neuroprune-S50-r1"]
    assert _arg(by_label["dsp-joint"], "--target-epoch") is None  # only NeuroPrune/l1 take it


@pytest.mark.parametrize("epochs,target,label", [("1", "", "neuroprune"), ("3", "3", "neuroprune"),
                                                 ("4", "", "neuroprune-r1"), ("4", "2", "neuroprune-r2")])
def test_target_epoch_and_label(tmp_path, epochs, target, label):
    env = {"ONLY": "^neuroprune 50 1$", "EPOCHS": epochs}
    if target:
        env["TARGET_EPOCH"] = target
    _out, calls = _run(tmp_path, **env)
    assert len(calls) == 1
    assert (_arg(calls[0], "--label") or _arg(calls[0], "--method")) == label
    assert _arg(calls[0], "--target-epoch") == (target or str(max(int(epochs) - 1, 1)))


def test_issue21_job_list_control_and_settings(tmp_path):
    """The default jobs: the dense model, the dense-FT control (seeds 1 and 2), NeuroPrune head control,
    NeuroPrune-S50/S70 and l1-S50 (penalty-driven), DSP joint / pipelined and Michel at K = 18 .. 100,
    seed 2 at K = 25 and 50; all with the pre-norm recipe, valid scored too, finalize threshold 0."""
    out, calls = _run(tmp_path)
    jobs = (tmp_path / "work" / "jobs.txt").read_text().splitlines()
    assert "42 jobs" in out and len(jobs) == 42 == len(calls)
    assert jobs[:2] == ["dense 0 1", "dense-ft 0 1"] and "dense-ft 0 2" in jobs
    ks = ["18", "25", "50", "75", "100"]
    for m in ("neuroprune", "dsp-joint", "neuroprune-S50", "neuroprune-S70", "l1-S50", "michel", "dsp-pipelined"):
        assert sorted((j.split()[1] for j in jobs if j.split()[0] == m and j.endswith(" 1")), key=int) == ks, m
    assert sorted(j for j in jobs if j.endswith(" 2")) == sorted(
        ["dense-ft 0 2", "neuroprune 25 2", "neuroprune 50 2", "dsp-joint 25 2", "dsp-joint 50 2"])
    assert all(_arg(c, "--recipe") == "multi30k-prenorm" and _arg(c, "--also-score") == "valid"
               and _arg(c, "--threshold") == "0" for c in calls)
    l1 = [c for c in calls if _arg(c, "--label") == "l1-S50-r1"]
    assert len(l1) == 5 and all(_arg(c, "--method") == "l1" and "--np-target-sparsity 50" in c for c in l1)
    ft = [c for c in calls if _arg(c, "--method") == "dense-ft"]
    assert sorted(_arg(c, "--seed") for c in ft) == ["1", "2"] and all(_arg(c, "--label") is None for c in ft)
