"""The main job (neuroprune-main) end to end on a tiny generated corpus, and its progress parts.

The corpus is generated (Multi30k layout, de->en names, a word-for-word cipher), so CI needs no
data; the model is TINY_ARCH (2+2 layers, 6 heads: 36 heads). About 1-2 minutes on one thread.
"""
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neuroprune_fairseq.recipes.progress import Eta, fmt_s, ft_pace_factor, parse_line
from conftest import TINY_ARCH

REPO = Path(__file__).resolve().parent.parent
K, S, E_DENSE, E_FT = 18, 30, 2, 2
TINY_MODEL = " ".join(TINY_ARCH + ["--share-all-embeddings", "--dropout", "0.1", "--label-smoothing", "0.1",
                                   "--optimizer", "adam", "--adam-betas", "(0.9,0.98)"])

# --------------------------------------------------------------------------- log parser and ETA

VALID = ("2026-11-23 05:46:14 | INFO | valid | epoch 003 | valid on 'valid' subset | loss 5.248 | nll_loss 5.048 | "
         "heads 6 | sparsity 50 | ppl 33.07 | heads_per_module 1.1.1.1.1.1 | wps 3056.7 | num_updates 9 | best_loss 5.208")
TRAIN = ("2026-11-23 05:46:14 | INFO | train | epoch 003 | loss 5.551 | nll_loss 5.404 | ppl 42.34 | wps 1336.9 | "
         "num_updates 27 | lr 0.005 | gnorm 2.127 | train_wall 3 | wall 6")
INNER = ("2026-11-23 05:46:13 | INFO | train_inner | epoch 001:      5 / 9 loss=5.731, nll_loss=5.613, ppl=48.96, "
         "num_updates=5, lr=0.005")


def test_parse_fairseq_epoch_lines():
    v, t = parse_line(VALID), parse_line(TRAIN)
    assert v["kind"] == "valid" and v["epoch"] == 3 and v["loss"] == 5.248 and v["heads"] == 6 and v["sparsity"] == 50
    assert v["heads_per_module"] == "1.1.1.1.1.1"
    assert t["kind"] == "train" and t["epoch"] == 3 and t["loss"] == 5.551 and t["num_updates"] == 27
    i = parse_line(INNER)  # within an epoch: the updates done, for an early estimate
    assert (i["kind"], i["epoch"], i["step"], i["steps"], i["loss"]) == ("inner", 1, 5, 9, 5.731)
    assert parse_line("2026-11-23 05:46:14 | INFO | fairseq_cli.train | end of epoch 3 (average epoch stats below)") is None


def test_eta_from_measured_and_guessed_pace():
    stages = [("dense training", {"dense": 8}), ("fine-tuning", {"neuroprune": 2, "dsp-joint": 2})]
    eta = Eta(stages, parallel=True, ft_factor=3.0, post_factor=0.5, models_left=3)
    assert eta.total_left("dense training") is None  # nothing measured yet
    eta.pace["dense"], eta.done["dense"] = 60.0, 3
    assert eta.stage_left("dense training") == 5 * 60
    # fine-tuning guessed at 3 x 60 s per epoch, 2 epochs, both side by side; 3 models at 30 s
    assert eta.stage_left("fine-tuning") == 2 * 180
    assert eta.total_left("dense training") == 300 + 360 + 3 * 30
    eta.done["dense"], eta.pace["neuroprune"], eta.done["neuroprune"] = 8, 100.0, 1
    eta.post_s_per_model, eta.models_left = 20.0, 2
    # neuroprune: 1 epoch x 100 s left; dsp-joint still guessed: 2 x 180 s; parallel -> the slower
    assert eta.stage_left("fine-tuning") == 360
    eta.parallel = False
    assert eta.total_left("fine-tuning") == 100 + 360 + 40
    assert (fmt_s(42), fmt_s(552), fmt_s(3780), fmt_s(None)) == ("42s", "9m12s", "1h03m", "?")
    # the default guesses: 2 cores, two 1-thread runs side by side ~1.6x the dense pace (measured 1.57-1.60)
    assert 1.55 < ft_pace_factor(2, 1) < 1.7 and ft_pace_factor(2, 2) == pytest.approx(1.05)
    assert Eta(stages).post_factor == 0.15


def test_resumed_job_gives_its_pace_to_the_eta(tmp_path):
    """A job trained in an earlier call (its .done) still gives the ETA a measured pace, so a
    resumed main job estimates the fine-tuning left instead of printing '?'."""
    from neuroprune_fairseq.recipes.progress import Job, run_jobs

    (tmp_path / "dense").mkdir()
    (tmp_path / "dense" / ".done").write_text(json.dumps({"train_wall_s": 480.0}))
    eta = Eta([("dense training", {"dense": 8}), ("fine-tuning", {"neuroprune": 2})], ft_factor=1.5)
    walls = run_jobs("dense training", [Job("dense", ["false"], tmp_path / "d.log", tmp_path / "dense", 8)], eta, False)
    assert walls == {"dense": 480.0} and eta.pace["dense"] == 60.0 and eta.done["dense"] == 8
    assert eta.stage_left("fine-tuning") == 2 * 90.0


# --------------------------------------------------------------------------- end to end


def _corpus(d: Path):
    """A learnable de->en task: every source word maps to one target word, same order."""
    rng = random.Random(0)
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pu"]
    src_words = sorted({rng.choice(syll) + rng.choice(syll) + rng.choice(syll) for _ in range(60)})[:40]
    cipher = {w: w[::-1].upper() for w in src_words}
    for name, n in (("train", 800), ("val", 60), ("test_2016_flickr", 40), ("extra/t2", 25)):
        pairs = []
        for _ in range(n):
            s = [rng.choice(src_words) for _ in range(rng.randint(3, 9))]
            pairs.append((" ".join(s), " ".join(cipher[w] for w in s)))
        for lang, col in (("de", 0), ("en", 1)):
            (d / name).parent.mkdir(exist_ok=True)
            with gzip.open(d / f"{name}.{lang}.gz", "wt", encoding="utf-8") as fh:
                fh.write("".join(p[col] + "\n" for p in pairs))


def _main(args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "neuroprune_fairseq.recipes.main", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=900)


def _args(raw, work, model=TINY_MODEL):
    return ["--data-dir", raw, "--work-dir", work, "--vocab-size", "120", "--model-args", model,
            "--dense-epochs", E_DENSE, "--ft-epochs", E_FT, "--heads", K, "--sparsity", S, "--max-tokens", 1024,
            "--dense-warmup", 20, "--ft-warmup", 10, "--parallel", "--extra-test", f"t2={raw / 'extra' / 't2'}"]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mainjob")
    raw, work = d / "raw", d / "work"
    raw.mkdir()
    _corpus(raw)
    p = _main(_args(raw, work), REPO)
    assert p.returncode == 0, f"main job failed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p, raw, work


def test_main_job_table_png_and_numbers(main_run):
    p, _raw, work = main_run
    res = json.loads((work / "main_results.json").read_text())
    rows = {r["method"]: r for r in res["rows"]}
    assert list(rows) == ["dense", "neuroprune", "dsp-joint"]
    assert rows["dense"]["heads_kept"] == rows["dense"]["heads_dense"] == 36
    assert rows["neuroprune"]["heads_kept"] == K and rows["dsp-joint"]["heads_kept"] == K
    assert rows["neuroprune"]["sparsity"] >= S - 0.5
    for r in rows.values():
        assert r["n_hyps"] == r["n_refs"] == 40 and r["train_wall_s"] > 0 and 0 < r["flops_ratio"] <= 1.0001
        assert "nrefs:1" in r["sacrebleu_signature"]
    assert rows["neuroprune"]["flops_ratio"] < 1 and rows["dsp-joint"]["flops_ratio"] < 1
    md = (work / "main_results.md").read_text()
    assert len([line for line in md.splitlines() if re.match(r"\| (dense|neuroprune|dsp-joint) \|", line)]) == 3
    assert "sacrebleu signature" in md
    assert (work / "main_results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # BLEU per test set (the test split first, the --extra-test set by its name), in the rows and the tables
    for r in rows.values():
        assert list(r["bleu_sets"]) == ["test_2016_flickr", "val", "t2"] and r["bleu_sets"]["test_2016_flickr"] == r["bleu"]
    assert "| method | BLEU test_2016_flickr | BLEU val | BLEU t2 | heads kept |" in md
    # the same table on stdout, with the BLEU of each row on each set
    for m, r in rows.items():
        b = r["bleu_sets"]
        assert re.search(rf"^{re.escape(m)}\s+{b['test_2016_flickr']:.2f}\s+{b['val']:.2f}\s+{b['t2']:.2f}\s+{r['heads_kept']}/36",
                         p.stdout, re.M), m


def test_main_job_progress_lines(main_run):
    out = main_run[0].stdout
    assert re.search(r"work dir .*work", out) and ".train.log" in out and "preprocess.log" in out
    for st in ("prepare", "dense training", "dense finalize \\+ evaluate", "fine-tuning",
               "dsp-joint hard top-K", "neuroprune finalize \\+ evaluate", "dsp-joint finalize \\+ evaluate"):
        assert re.search(rf"stage {st}: start", out) and re.search(rf"stage {st}: done in ", out), st
    for name, n in (("dense", E_DENSE), ("neuroprune", E_FT), ("dsp-joint", E_FT)):
        for e in range(1, n + 1):
            assert re.search(rf"\] {name} epoch {e}/{n}  loss [\d.]+  valid [\d.]+.*elapsed \S+  stage ETA \S+  total ETA \S+",
                             out), (name, e)
    # K is reached after epoch E - 1 (the default --target-epoch) and kept in the recovery epoch
    assert re.search(r"neuroprune epoch 1/2 .* heads 18 ", out) and re.search(r"neuroprune epoch 2/2 .* heads 18 ", out)


def test_main_job_target_epoch_out_of_range_is_refused(tmp_path):
    p = _main(["--data-dir", tmp_path, "--ft-epochs", 2, "--target-epoch", 3], REPO)
    assert p.returncode == 2 and "--target-epoch 3: must be between 1 and --ft-epochs (2)" in p.stderr


def test_main_job_resumes_without_retraining(main_run, tmp_path):
    _p, raw, work = main_run
    p = _main(_args(raw, work), REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "already trained" in p.stdout and " epoch 1/" not in p.stdout


def test_main_job_failure_names_stage_and_log(main_run, tmp_path):
    _p, raw, work = main_run
    work2 = tmp_path / "work"
    shutil.copytree(next(work.glob("prep_*")), work2 / next(work.glob("prep_*")).name)  # skip the preparation
    p = _main(_args(raw, work2, model=TINY_MODEL + " --no-such-fairseq-option 3"), REPO)
    assert p.returncode != 0
    log = re.search(r"main job failed at stage 'dense training': read (\S+\.train\.log)", p.stderr)
    assert log, p.stderr[-3000:]
    assert "--no-such-fairseq-option" in Path(log.group(1)).read_text()
    assert "unrecognized arguments" in p.stderr  # the log's last lines are printed too
