"""Tests of the experiment recipes (examples/, scripts/) on small slices of real data.

Data: ``NEUROPRUNE_DATA`` must point at the shared data folder (with ``iwslt14/`` and
``multi30k/``); without it the data tests are skipped. Total time: well under 2 minutes.
"""
import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
from neuroprune_fairseq.recipes import datafiles, scoring  # noqa: E402
from neuroprune_fairseq.recipes import iwslt14 as iwslt  # noqa: E402


def _data(sub):
    root = os.environ.get("NEUROPRUNE_DATA")
    if not root:
        pytest.skip("NEUROPRUNE_DATA is not set (path of the shared data folder)")
    p = Path(root) / sub
    if not p.exists():
        pytest.skip(f"{p} missing")
    return p


def _cap(s):
    """Re-case sentence starts: the shipped text is lowercased, and Moses' rule for a
    sentence-internal period looks at the case of the next word."""
    return re.sub(r"(^|[.!?] )([a-zäöü])", lambda m: m.group(1) + m.group(2).upper(), s)


# ------------------------------------------------------------------ IWSLT14 preparation

@pytest.mark.parametrize("lang", ["de", "en"])
def test_iwslt_test_split_is_the_standard_concatenation(lang):
    d = _data("iwslt14")
    cat = []
    for part in iwslt.TEST_PARTS:
        cat += iwslt.read(d / "test_parts" / f"{part}.de-en.{lang}")
    assert len(cat) == 6750
    assert cat == iwslt.read(d / "tok" / f"test.{lang}")


@pytest.mark.parametrize("lang", ["de", "en"])
def test_iwslt_moses_tokenizer_reproduces_shipped_tokens(lang):
    from sacremoses import MosesDetokenizer

    d = _data("iwslt14")
    ref = iwslt.read(d / "tok" / f"test.{lang}")[:400]
    tok = iwslt.tokenizers()[lang]
    md = MosesDetokenizer(lang=lang)
    hits = sum(iwslt.tokenize(_cap(md.detokenize(r.split(), unescape=True)), tok) == r for r in ref)
    # measured: 0.99 (de) and 0.99 (en) on 500 lines; misses are abbreviations such as
    # "u.s.a ." whose split depends on the original casing we cannot recover
    assert hits / len(ref) >= 0.97, hits / len(ref)


@pytest.mark.parametrize("split,lang", [("test", "de"), ("test", "en"), ("valid", "de"), ("valid", "en")])
def test_iwslt_bpe_codes_reproduce_shipped_bpe(split, lang):
    d = _data("iwslt14")
    tok = iwslt.read(d / "tok" / f"{split}.{lang}")[:300]
    ref = iwslt.read(d / "bpe10k" / f"{split}.{lang}")[:300]
    got = iwslt.apply_bpe(d / "bpe10k" / "code", tok)
    assert sum(g == r for g, r in zip(got, ref)) / len(ref) == 1.0


def test_iwslt_valid_split_every_23rd_line():
    lines = [f"l{i}" for i in range(1, 160239 + 7283 + 1)]  # the standard cleaned training size
    train, valid = iwslt.split_valid(lines)
    assert (len(train), len(valid)) == (160239, 7283)
    assert valid[:2] == ["l23", "l46"] and "l23" not in train and train[21:23] == ["l22", "l24"]


def test_iwslt_length_cleaning_like_clean_corpus_n():
    src = ["a b c", "", "a " * 176, "a b c d", "a"]
    tgt = ["x y", "x", "x " * 176, "x y", "x y"]
    # 3/2 = 1.5 kept (not > ratio); empty dropped; > 175 dropped; 4/2 = 2 dropped; 2/1 dropped
    assert iwslt.clean_pairs(src, tgt) == [0]


def test_iwslt_train_and_xml_extraction():
    text = "<url>http://x</url>\n<keywords>k</keywords>\n<talkid>1</talkid>\n<title>A talk</title>\nHello there.\n"
    assert iwslt.train_lines(text) == ["A talk", "Hello there."]
    xml = '<doc>\n<seg id="1"> Hallo Welt. </seg>\n<seg id="2">It\u2019s me</seg>\n</doc>\n'
    assert iwslt.xml_segments(xml) == ["Hallo Welt.", "It's me"]


def test_iwslt_binarize_small_slice(tmp_path):
    d = _data("iwslt14")
    bpe = tmp_path / "bpe"
    bpe.mkdir()
    for split, src, n in (("train", "valid", 200), ("valid", "valid", 50), ("test", "test", 50)):
        for lang in ("de", "en"):
            lines = iwslt.read(d / "bpe10k" / f"{src}.{lang}")[:n]
            iwslt.write(bpe / f"{split}.{lang}", lines)
    iwslt.binarize(bpe, tmp_path / "bin", workers=1)
    dde = (tmp_path / "bin" / "dict.de.txt").read_text()
    assert dde == (tmp_path / "bin" / "dict.en.txt").read_text()  # joined dictionary
    log = (tmp_path / "bin" / "preprocess.log").read_text()
    assert re.search(r"\[de\] .*train\.de: 200 sents", log) and re.search(r"\[en\] .*test\.en: 50 sents", log)


# ------------------------------------------------------------------ Multi30k + scoring

def test_multi30k_raw_counts():
    d = _data("multi30k")
    assert len(datafiles.read_lines(d / "test_2016_flickr.en.gz")) == 1000
    assert len(datafiles.read_lines(d / "val.de.gz")) == 1014
    assert len(datafiles.read_lines(d / "train.en.gz")) == 29000


def test_sacrebleu_refuses_count_mismatch_and_scores():
    bleu, sig = scoring.sacrebleu_score(["a cat sat on the mat ."], ["a cat sat on the mat ."])
    assert bleu == pytest.approx(100.0) and "tok:13a" in sig and "case:mixed" in sig
    with pytest.raises(ValueError, match="not a test-set BLEU"):
        scoring.sacrebleu_score(["a"], ["a", "b"])


def test_generate_output_parsing(monkeypatch, tmp_path):
    class R:
        returncode = 0
        stdout = "S-1\tx\nH-1\t-0.5\tsecond\nD-1\t-0.5\tsecond\nH-0\t-0.1\tfirst one\n"
        stderr = "Translated 2 sentences (9 tokens) in 0.5s (4.00 sentences/s, 18.00 tokens/s)\n"

    monkeypatch.setattr(scoring.subprocess, "run", lambda *a, **k: R())
    g = scoring.generate(tmp_path, tmp_path / "x.pt")
    assert g["hyps"] == ["first one", "second"] and g["sentences_per_s"] == 4.0 and g["sentences"] == 2


# ------------------------------------------------------------------ sweep + plot

def test_sweep_grid_and_resume(tmp_path):
    from neuroprune_fairseq.recipes import sweep

    cfg = {"grid": [{"method": "neuroprune", "alpha": [0.01, 0.05], "beta": 0.1, "theta": [0.2, 0.3]},
                    {"method": "l1", "alpha": 0.005, "beta": 0.05, "theta": 0.3}]}
    pts = sweep.expand(cfg["grid"])
    assert len(pts) == 5 and pts[0] == {"method": "neuroprune", "alpha": 0.01, "beta": 0.1, "theta": 0.2}
    res = tmp_path / "r.jsonl"
    res.write_text(json.dumps({**pts[0], "finetune_epochs": 3, "dense_init": "d"}) + "\n")
    assert sweep.key({**pts[0], "finetune_epochs": 3, "dense_init": "d"}) in sweep.done_keys(res)
    assert sweep.key({**pts[1], "finetune_epochs": 3, "dense_init": "d"}) not in sweep.done_keys(res)
    # a row without penalty_scale was trained per token: a batch-scale point is not "done"
    assert sweep.key({**pts[0], "finetune_epochs": 3, "dense_init": "d", "penalty_scale": "batch"}) not in sweep.done_keys(res)
    # the shipped preset config parses and has >= 5 NeuroPrune points and the l1 baseline
    preset = sweep.expand(sweep.load_config(REPO / "examples" / "multi30k_cpu" / "sweep.json")["grid"])
    assert sum(p["method"] == "neuroprune" for p in preset) >= 5 and any(p["method"] == "l1" for p in preset)


def test_plot_draws_every_method(tmp_path):
    from neuroprune_fairseq.recipes import plot_frontier

    rows = [{"method": "dense", "bleu": 35.0, "heads_kept": 108, "sparsity": 0.0},
            {"method": "neuroprune", "alpha": 0.05, "beta": 0.1, "theta": 0.3, "bleu": 34.6, "heads_kept": 60, "sparsity": 30.0},
            {"method": "neuroprune", "alpha": 0.1, "beta": 0.1, "theta": 0.3, "bleu": 33.0, "heads_kept": 40, "sparsity": 50.0},
            {"method": "l1", "bleu": 34.2, "heads_kept": 90, "sparsity": 20.0},
            {"method": "dsp", "bleu": 34.8, "heads_kept": 36, "sparsity": 0.0}]
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "f.png"
    plot_frontier.main([str(f), "--out", str(out), "--table", str(tmp_path / "t.md")])
    assert out.stat().st_size > 10_000
    md = (tmp_path / "t.md").read_text()
    assert all(f"| {m} |" in md for m in ("dense", "neuroprune", "l1", "dsp"))
    # matched head counts: both NeuroPrune points sit next to the only DSP point (36 heads)
    assert "| 60 | 34.60 | 34.80 | 36 |" in md and "| 40 | 33.00 | 34.80 | 36 |" in md
    assert plot_frontier.upper_frontier([(40, 33.0), (60, 34.6), (70, 34.0), (108, 35.0)]) == [(40, 33.0), (60, 34.6), (108, 35.0)]


def test_iwslt_prepare_end_to_end_on_a_synthetic_raw_folder(tmp_path):
    """The whole prepare.py on a tiny raw folder laid out like de-en.tgz, built from real
    lines (detokenized): metadata lines dropped, cleaning, every-23rd valid split, test =
    the five xml parts in order, BPE learned and applied, binarized."""
    from sacremoses import MosesDetokenizer

    d = _data("iwslt14")
    raw = tmp_path / "de-en"
    raw.mkdir()
    n = 92
    for lang in ("de", "en"):
        md = MosesDetokenizer(lang=lang)
        lines = [_cap(md.detokenize(x.split(), unescape=True)) for x in iwslt.read(d / "tok" / f"valid.{lang}")[:n]]
        head = ["<url>http://www.ted.com/talks/x</url>", "<keywords>talks</keywords>", "<talkid>1</talkid>"]
        (raw / f"train.tags.de-en.{lang}").write_text("\n".join(head + lines) + "\n", encoding="utf-8")
        for k, part in enumerate(iwslt.TEST_PARTS):
            segs = iwslt.read(d / "test_parts" / f"{part}.de-en.{lang}")[:3 + k]
            body = "".join(f'<seg id="{i + 1}"> {_cap(md.detokenize(s.split(), unescape=True))} </seg>\n'
                           for i, s in enumerate(segs))
            (raw / f"{part}.de-en.{lang}.xml").write_text(f"<mteval>\n<doc docid=\"1\">\n{body}</doc>\n</mteval>\n",
                                                          encoding="utf-8")
    out = tmp_path / "out"
    iwslt.main(["--out", str(out), "--raw-dir", str(raw), "--skip-binarize"])  # binarizing: tested above
    kept = len(iwslt.clean_pairs(*[[x for x in iwslt.read(out / "tok" / f"train.{lang}")] for lang in ("de", "en")]))
    sizes = {s: len(iwslt.read(out / "tok" / f"{s}.de")) for s in ("train", "valid", "test")}
    total = sizes["train"] + sizes["valid"]
    assert n - 10 <= total <= n and sizes["valid"] == total // 23 and kept == sizes["train"]
    assert sizes["test"] == sum(3 + k for k in range(5)) == len(iwslt.read(out / "raw" / "test.en"))
    # the tokenized test lines are the standard ones (first 3 of dev2010 open the test set)
    assert iwslt.read(out / "tok" / "test.en")[:3] == iwslt.read(d / "test_parts" / "IWSLT14.TED.dev2010.de-en.en")[:3]
    assert (out / "code").read_text().startswith("#version")
    assert any("@@ " in x for x in iwslt.read(out / "bpe" / "train.de"))


def test_iwslt_scoring_on_the_standard_references(monkeypatch, tmp_path):
    """evaluate_iwslt's two BLEUs with the references as hypotheses: 100 both, and a
    dropped sentence is refused."""
    d = _data("iwslt14")
    prep = tmp_path / "prep"
    (prep / "tok").mkdir(parents=True)
    refs = iwslt.read(d / "tok" / "test.en")[:200]
    iwslt.write(prep / "tok" / "test.en", refs)
    monkeypatch.setattr(scoring, "bin_gen_cap", lambda *a, **k: ["--max-len-a", "1.5", "--max-len-b", "12"])  # (no bin/ here)
    monkeypatch.setattr(scoring, "generate", lambda *a, **k: {"hyps": list(refs), "wall_s": 1.0, "sentences_per_s": 9.0})
    r = scoring.evaluate_iwslt(prep, tmp_path / "x.pt")
    assert r["bleu"] == pytest.approx(100.0) and r["bleu_tok"] == pytest.approx(100.0)
    assert "case:lc" in r["sacrebleu_signature"] and r["n_hyps_eq_n_refs"]
    monkeypatch.setattr(scoring, "generate", lambda *a, **k: {"hyps": list(refs[:-1]), "wall_s": 1.0})
    with pytest.raises(ValueError, match="199 hypotheses for 200 references"):
        scoring.evaluate_iwslt(prep, tmp_path / "x.pt")


def test_dsp_sweep_reads_a_results_file_shared_with_the_neuroprune_sweep(tmp_path):
    from neuroprune_fairseq.recipes import sweep_dsp

    dsp_row = {"method": "dsp", "mode": "pipelined", "K": 25, "epochs": 1, "init": "d.pt"}
    res = tmp_path / "r.jsonl"
    res.write_text("".join(json.dumps(r) + "\n" for r in [
        {"method": "dense", "bleu": 32.8, "heads_kept": 108},
        {"method": "neuroprune", "alpha": 0.5, "beta": 0.1, "theta": 0.4, "bleu": 29.6, "heads_kept": 33},
        dsp_row]))
    assert sweep_dsp.done_keys(res) == {sweep_dsp.point_key(dsp_row)}


def test_sweep_heads_iwslt14_recipe_dry_run(tmp_path, capsys):
    """--recipe iwslt14: the IWSLT model arguments, the tokenized references checked before
    anything runs, and the recipe in the point's identity (multi30k points keep theirs)."""
    from neuroprune_fairseq.recipes import sweep_heads

    prep = tmp_path / "iwslt"
    (prep / "bin").mkdir(parents=True)
    dense = tmp_path / "dense.pt"
    dense.write_bytes(b"x")
    args = ["--method", "neuroprune", "--heads", "25", "--dense", str(dense), "--prep", str(prep),
            "--work-dir", str(tmp_path / "w"), "--results", str(tmp_path / "r.jsonl"), "--dry-run"]
    with pytest.raises(SystemExit):
        sweep_heads.main([*args, "--recipe", "iwslt14"])
    assert "tok/test.en does not exist" in capsys.readouterr().err
    (prep / "tok").mkdir()
    (prep / "tok" / "test.en").write_text("a b\n")
    sweep_heads.main([*args, "--recipe", "iwslt14"])
    out = capsys.readouterr().out
    assert '"recipe": "iwslt14"' in out and "neuroprune_K25_e3_s1_" in out
    assert sweep_heads.RECIPES["iwslt14"][:2] == ["--arch", "neuroprune_iwslt_de_en"]
    assert "--share-all-embeddings" not in sweep_heads.RECIPES["iwslt14"]


def test_sweep_heads_target_epoch(tmp_path, capsys, monkeypatch):
    """--target-epoch E' hands --np-target-epoch E' (not E) to fairseq-train, is part of the
    point's identity only when it differs from E, and is refused where it cannot apply."""
    from types import SimpleNamespace

    from neuroprune_fairseq.recipes import steps, sweep_heads

    prep = tmp_path / "m30k"
    (prep / "bin").mkdir(parents=True)
    (prep / "raw").mkdir()
    (prep / "raw" / "test.en").write_text("a b\n")
    (prep / "prep.json").write_text(json.dumps({"src_lang": "de", "tgt_lang": "en"}))
    dense = tmp_path / "dense.pt"
    dense.write_bytes(b"x")
    args = ["--method", "neuroprune", "--heads", "25", "--epochs", "3", "--dense", str(dense), "--prep", str(prep),
            "--work-dir", str(tmp_path / "w"), "--results", str(tmp_path / "r.jsonl"), "--dry-run"]
    sweep_heads.main([*args, "--target-epoch", "2"])
    assert '"target_epoch": 2' in capsys.readouterr().out
    sweep_heads.main([*args, "--target-epoch", "3"])
    assert "\"target_epoch\"" not in capsys.readouterr().out
    for bad in (["--target-epoch", "4"], ["--model-args", "--np-target-epoch 2"]):
        with pytest.raises(SystemExit):
            sweep_heads.main([*args, *bad])
        assert "--target-epoch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep_heads.main([*args[:1], "michel", *args[2:], "--target-epoch", "2"])
    assert "only for neuroprune/l1" in capsys.readouterr().err

    seen = []
    monkeypatch.setattr(steps, "train", lambda bin_dir, save, argv, log: seen.append(list(argv)) or 1.0)
    a = SimpleNamespace(prep=prep, dense=dense, epochs=3, recipe="multi30k", model_args="", seed=1, method="neuroprune")
    sweep_heads.run_point(a, 25, tmp_path / "run", tmp_path / "logs", {"alpha": 0.5, "beta": 0.1, "target_epoch": 2})
    sweep_heads.run_point(a, 25, tmp_path / "run2", tmp_path / "logs", {"alpha": 0.5, "beta": 0.1})
    te = [argv[argv.index("--np-target-epoch") + 1] for argv in seen]
    assert te == ["2", "3"] and all(argv[argv.index("--max-epoch") + 1] == "3" for argv in seen)


def test_bench_speed_builds_plugin_trainers_in_a_fresh_process(tiny_data):
    """bench_speed's in-process trainers get the plugin's task and criterion even though the
    package is imported before fairseq's --user-dir import (which then skips it)."""
    import subprocess
    import sys

    from conftest import TINY_ARCH

    code = ("import sys; from neuroprune_fairseq.recipes import bench_speed as b; "
            "task, tr = b.build_trainer(sys.argv[1], ['--criterion', 'neuroprune_ce', '--max-epoch', '1'], "
            "sys.argv[2:], None); print(type(task).__name__, type(tr.criterion).__name__)")
    p = subprocess.run([sys.executable, "-c", code, str(tiny_data / "bin"), *TINY_ARCH], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split()[-2:] == ["NeuroPruneTranslationTask", "NeuroPruneCriterion"], p.stdout[-500:]


def test_committed_frontier_rows_keep_their_point_keys():
    """sweeps.settings_hash of a row's identity is the point key sweep_heads wrote: a resumed sweep
    skips the points the committed results files (and the running frontier's file) hold."""
    from neuroprune_fairseq.recipes import sweeps

    ident = ("method", "K", "seed", "epochs", "dense", "threshold", "alpha", "beta", "target_epoch", "gate_lr",
             "anneal_steps", "model_args", "recipe", "base_method")
    rows = [json.loads(line) for f in ("frontier_multi30k.jsonl", "frontier_multi30k_sp_cpu.jsonl")
            for line in (REPO / "results" / f).read_text().splitlines() if line.strip()]
    assert len(rows) > 10
    assert all(sweeps.settings_hash({k: r[k] for k in ident if k in r}, 12) == r["point_key"] for r in rows)


def test_sweep_engine_pending_and_record(tmp_path, capsys):
    """A Sweep reads the keys of the rows it owns in a shared file, logs what is left, and marks a
    recorded point done."""
    from neuroprune_fairseq.recipes import sweeps

    res = tmp_path / "sub" / "r.jsonl"
    res.parent.mkdir()
    res.write_text(json.dumps({"method": "dsp", "K": 1}) + "\n" + json.dumps({"method": "dense"}) + "\n")
    sweep = sweeps.Sweep(res, key=lambda r: (r["method"], r.get("K")), where=lambda r: r.get("K") is not None)
    assert sweep.pending([1, 2, 3], lambda k: {"method": "dsp", "K": k}, lambda left: f": K={left}") == [2, 3]
    assert "3 points, 1 already in" in capsys.readouterr().out
    sweep.record({"method": "dsp", "K": 2, "bleu": 1.0}, "dsp K=2 done")
    assert sweep.done({"method": "dsp", "K": 2}) and "dsp K=2 done" in capsys.readouterr().out
    assert json.loads(res.read_text().splitlines()[-1]) == {"method": "dsp", "K": 2, "bleu": 1.0}
    assert sweeps.settings_hash({"b": 1, "a": 2}) == sweeps.settings_hash({"a": 2, "b": 1})


def test_presets_share_the_multi30k_model():
    """The main job's --model-args default, the pre-norm fine-tuning preset and the CPU preset are
    built from one Multi30k model list (the main job's run folders hash the string as it was)."""
    from neuroprune_fairseq.recipes import main, presets

    assert main.MODEL_ARGS == ("--arch neuroprune_multi30k_cpu --share-all-embeddings --encoder-normalize-before "
                               "--decoder-normalize-before --dropout 0.1 --label-smoothing 0.1 --optimizer adam "
                               "--adam-betas (0.9,0.98)")
    assert presets.MULTI30K_PRENORM_FT[:len(presets.MULTI30K_PRENORM_MODEL)] == presets.MULTI30K_PRENORM_MODEL
    assert presets.MULTI30K_MODEL[:3] == presets.MULTI30K_ARCH and presets.THETA == 0.2


def test_gpu_check_script_is_a_thin_wrapper(tmp_path):
    """scripts/gpu_check_mixed_precision.sh embeds no Python: its steps are
    neuroprune_fairseq.recipes.gpu_check's (here: the toy data, without a GPU)."""
    import subprocess
    import sys

    script = (REPO / "scripts" / "gpu_check_mixed_precision.sh").read_text()
    assert "<<'EOF'" not in script and "python -c" not in script and "neuroprune_fairseq.recipes.gpu_check" in script
    subprocess.run([sys.executable, "-m", "neuroprune_fairseq.recipes.gpu_check", "data", "--cpu"], cwd=tmp_path, check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=300)
    assert len((tmp_path / "train.src").read_text().splitlines()) == 600
    assert (tmp_path / "valid.tgt").read_text().split("\n")[0].isupper()


def test_sweep_heads_scores_every_set_by_name(tmp_path, monkeypatch):
    """sweep_heads' rows: the test split's scores and bleu_sets {set name: BLEU} over the test split and
    every --also-score split (names from prep.json: Multi30k's test -> test_2016_flickr, valid -> val),
    each decoded into its own log; a missing hypothesis is an error naming the set."""
    from types import SimpleNamespace

    from neuroprune_fairseq.recipes import scoring, sweep_heads

    prep = tmp_path / "prep"
    prep.mkdir()
    (prep / "prep.json").write_text(json.dumps({"src_lang": "de", "tgt_lang": "en", "files": {
        "test": {"en": {"path": "d/test_2016_flickr.en.gz"}}, "valid": {"en": {"path": "d/val.en.gz"}}}}))
    calls = []

    def fake(prep_dir, ckpt, subset="test", beam=5, batch_size=64, logfile=None):
        calls.append((subset, Path(logfile).name))
        n = 9 if subset == "valid" and "short" in str(ckpt) else 10
        return {"bleu": {"test": 30.0, "valid": 31.5}[subset], "n_hyps": n, "n_refs": 10, "n_hyps_eq_n_refs": n == 10,
                "sacrebleu_signature": "s"}
    monkeypatch.setattr(scoring, "evaluate_prep", fake)
    a = SimpleNamespace(recipe="multi30k-prenorm", prep=prep, also_score=["valid"])
    ev = sweep_heads.evaluate(a, tmp_path / "final.pt", tmp_path / "p.generate.log")
    assert ev["bleu"] == 30.0 and ev["bleu_sets"] == {"test_2016_flickr": 30.0, "val": 31.5}
    assert list(ev["bleu_sets"]) == ["test_2016_flickr", "val"]
    assert calls == [("test", "p.generate.log"), ("valid", "p.generate.valid.log")]
    with pytest.raises(RuntimeError, match="val: 9 hypotheses for 10 references"):
        sweep_heads.evaluate(a, tmp_path / "short.pt", tmp_path / "q.generate.log")
