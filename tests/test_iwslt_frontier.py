"""examples/iwslt14_de_en/frontier.sh end to end, for real: the IWSLT14 training sample with the real
valid and test files (../shared/data/iwslt14), a tiny model, 1 dense + 1 fine-tuning epoch, two head
budgets K, the dense-FT control, NeuroPrune and DSP joint, through to the frontier table and plot
(about 15 CPU minutes: every point decodes the whole test set).
A GPU user's 15 + 15-epoch run goes through the same script, stages and files, so it cannot fail at
a late stage for a reason this short run would have shown. Needs NEUROPRUNE_DATA."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_ARCH
from neuroprune_fairseq.recipes import datafiles, runner

REPO = Path(__file__).resolve().parent.parent
pytest.importorskip("fairseq")


def _iwslt() -> Path:
    root = os.environ.get("NEUROPRUNE_DATA")
    d = Path(root) / "iwslt14" if root else None
    if d is None or not (d / "train_sample").exists():
        pytest.skip("NEUROPRUNE_DATA is not set (path of the shared data folder with iwslt14/)")
    return d


def _prepared(iw: Path, out: Path) -> Path:
    """The layout examples/iwslt14_de_en/prepare.py writes (bpe/, tok/, bin/), from the training sample
    (the full training set is not offline) and the standard valid/test files."""
    for lang in ("de", "en"):
        datafiles.write_lines(out / "bpe" / f"train.{lang}", datafiles.read_lines(iw / "train_sample" / f"sample4600.bpe.{lang}"))
        for split in ("valid", "test"):
            datafiles.write_lines(out / "bpe" / f"{split}.{lang}", datafiles.read_lines(iw / "bpe10k" / f"{split}.{lang}"))
            datafiles.write_lines(out / "tok" / f"{split}.{lang}", datafiles.read_lines(iw / "tok" / f"{split}.{lang}"))
    runner.run([runner.tool("fairseq-preprocess"), "--source-lang", "de", "--target-lang", "en",
                "--trainpref", out / "bpe" / "train", "--validpref", out / "bpe" / "valid", "--testpref", out / "bpe" / "test",
                "--destdir", out / "bin", "--joined-dictionary", "--workers", "2"], logfile=out / "preprocess.log")
    return out


def _run(cmd, cwd, env, timeout):
    """The script in its own process group: on a timeout the whole group goes (its jobs and their
    fairseq processes too, not only bash)."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def test_iwslt14_frontier_script_end_to_end(tmp_path):
    iw = _iwslt()
    data = _prepared(iw, tmp_path / "data")
    n_test = len(datafiles.read_lines(iw / "tok" / "test.en"))
    tiny = " ".join(TINY_ARCH)  # 2 + 2 layers, 6 heads in each of 6 attention modules = 36 heads
    results = tmp_path / "frontier_iwslt14.jsonl"
    env = {**os.environ, "DATA": str(data), "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "DENSE_EPOCHS": "1", "EPOCHS": "1", "JOBS": "2", "THREADS": "1", "KS": "12 24",
           # five points (each decodes the whole 6,750-line test set: about 2.5 CPU minutes for this model)
           "ONLY": r"^(dense-ft|neuroprune|dsp-joint) [0-9]+ 1$",
           "DENSE_ARGS": f"{tiny} --lr 1e-2 --warmup-updates 10 --max-tokens 512",
           "MODEL_ARGS": f"{tiny} --lr 1e-2 --warmup-updates 10 --max-tokens 512"}
    script = ["bash", str(REPO / "examples" / "iwslt14_de_en" / "frontier.sh"), str(tmp_path / "work"), str(results)]
    p = _run(script, tmp_path, env, 3600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    got = sorted((r["method"], r["K"]) for r in rows)
    assert got == [("dense-ft", 36), ("dsp-joint", 12), ("dsp-joint", 24), ("neuroprune", 12), ("neuroprune", 24)], got
    for r in rows:
        assert r["n_hyps"] == r["n_refs"] == n_test  # the whole standard test set, every point
        assert r["heads_kept"] == r["K"] and r["epochs"] == 1
        assert r["recipe"] == "iwslt14"
        assert 0 <= r["bleu"] <= 100 and "bleu_tok" in r
        assert r["gen_cap"] == "--max-len-a 1.5 --max-len-b 12"  # every training pair fits 1.5 x + 2, + 10 to spare
    table = results.with_suffix(".md").read_text()
    png = results.with_suffix(".png")
    assert png.exists() and png.stat().st_size > 10_000
    for m in ("dense-ft", "neuroprune", "dsp-joint"):
        assert f"| {m} |" in table
    # rerun: every point is already there (resumable), nothing is trained again
    p2 = _run(script, tmp_path, env, 600)
    assert p2.returncode == 0 and len(results.read_text().splitlines()) == 5
