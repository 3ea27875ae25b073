"""neuroprune-prepare (any language pair, both raw layouts) and neuroprune-evaluate (any raw test
set) on a generated xx->yy corpus: prep.json, sentencepiece/binary outputs, both directions, a tiny
fairseq-train on the result, and decoding raw files with an empty and a very long line.
The Multi30k-layout test (en->de, a slice) needs NEUROPRUNE_DATA."""
import gzip
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_ARCH
from neuroprune_fairseq.recipes import datafiles, preparation, prepare, scoring, steps

pytest.importorskip("fairseq")
MAX_POS = 256
XX = ["ka", "lo", "mi", "nu", "pe", "ro", "su", "ti", "va", "ze", "bo", "da"]
YY = {w: w[::-1].upper() + "q" for w in XX}  # a word-for-word translation, order reversed


def _pair(rng, n_words):
    s = [rng.choice(XX) for _ in range(n_words)]
    return " ".join(s), " ".join(YY[w] for w in reversed(s))


def write_corpus(d: Path, sizes=(("train", 400), ("valid", 40), ("test", 30)), gz_train=True):
    rng = random.Random(0)
    d.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        pairs = [_pair(rng, rng.randint(2, 9)) for _ in range(n)]
        for i, lang in enumerate(("xx", "yy")):
            text = "".join(p[i] + "\n" for p in pairs)
            if split == "train" and lang == "xx" and gz_train:
                with gzip.open(d / f"train.{lang}.gz", "wt", encoding="utf-8") as fh:
                    fh.write(text)
            else:
                (d / f"{split}.{lang}").write_text(text, encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def prepped(tmp_path_factory):
    d = tmp_path_factory.mktemp("prep")
    raw = write_corpus(d / "raw_in")
    preparation.prepare(raw, d / "xx_yy", "xx", "yy", vocab_size=60)
    preparation.prepare(raw, d / "yy_xx", "yy", "xx", vocab_size=60)
    return d


def test_prepare_generic_layout_both_directions(prepped):
    import sentencepiece as spm

    out = prepped / "xx_yy"
    meta = json.loads((out / "prep.json").read_text())
    assert (meta["src_lang"], meta["tgt_lang"], meta["layout"], meta["vocab_size"]) == ("xx", "yy", "generic", 60)
    assert {s: f["xx"]["lines"] for s, f in meta["files"].items()} == {"train": 400, "valid": 40, "test": 30}
    assert meta["files"]["train"]["xx"]["path"].endswith("train.xx.gz") and meta["files"]["train"]["yy"]["path"].endswith("train.yy")
    # the length cap: every training target fits a*src+b, and b-1 would cut at least one (unless b is the floor 1)
    sp = spm.SentencePieceProcessor(model_file=str(out / "spm.model"))
    assert sp.get_piece_size() == 60
    ls = [len(p) for p in sp.encode(datafiles.read_lines(out / "raw" / "train.xx"), out_type=str)]
    lt = [len(p) for p in sp.encode(datafiles.read_lines(out / "raw" / "train.yy"), out_type=str)]
    a, b = meta["gen_max_len_a"], meta["gen_max_len_b"]
    assert a == 1.5 and all(t <= int(a * s + b) for s, t in zip(ls, lt))
    assert b == 1 or any(t > int(a * s + b - 1) for s, t in zip(ls, lt))
    assert scoring.gen_cap(out) == ["--max-len-a", "1.5", "--max-len-b", str(b)]
    # spm/ decodes back to raw/, the binary holds one xx-yy pair with a joined dictionary
    for split, n in (("train", 400), ("valid", 40), ("test", 30)):
        for lang in ("xx", "yy"):
            pieces = datafiles.read_lines(out / "spm" / f"{split}.{lang}")
            assert len(pieces) == n
            assert [sp.decode(p.split()) for p in pieces] == datafiles.read_lines(out / "raw" / f"{split}.{lang}")
    assert (out / "bin" / "dict.xx.txt").read_text() == (out / "bin" / "dict.yy.txt").read_text()
    assert datafiles.bin_langs(out / "bin") == ("xx", "yy") and datafiles.prep_langs(out) == ("xx", "yy")
    log = (out / "preprocess.log").read_text()
    assert re.search(r"\[xx\] .*train\.xx: 400 sents", log) and re.search(r"\[yy\] .*test\.yy: 30 sents", log)
    # the other direction: same text, the pair reversed
    rev = prepped / "yy_xx"
    assert datafiles.bin_langs(rev / "bin") == ("yy", "xx") and json.loads((rev / "prep.json").read_text())["src_lang"] == "yy"
    assert (rev / "raw" / "test.yy").read_text() == (out / "raw" / "test.yy").read_text()
    assert datafiles.src_path(rev / "bin", "test") == rev / "spm" / "test.yy"
    # idempotent for the same pair; another pair into the same folder is refused
    assert preparation.prepare(prepped / "raw_in", out, "xx", "yy") == out / "bin"
    with pytest.raises(ValueError, match="prepared for xx->yy"):
        preparation.prepare(prepped / "raw_in", out, "yy", "xx")


def test_gen_len_b_hand_computed():
    # ceil(5 - 3) = 2, ceil(5 - 6) = -1, ceil(1 - 0) = 1, ceil(3 - 1.5) = 2 -> 2
    assert preparation.gen_len_b([2, 4, 0, 1], [5, 5, 1, 3]) == 2
    assert preparation.gen_len_b([4, 4], [1, 2]) == 1  # floor 1: an empty source still gets a search step


def test_prepare_bad_inputs(tmp_path):
    raw = write_corpus(tmp_path / "raw", sizes=(("train", 40), ("valid", 5), ("test", 5)))
    with pytest.raises(FileNotFoundError, match=r"no complete xx-zz corpus.*train\.\{xx,yy\}"):
        preparation.prepare(raw, tmp_path / "o1", "xx", "zz")
    with pytest.raises(SystemExit, match="no complete"):
        prepare.main(["--data-dir", str(raw), "--src-lang", "cs", "--tgt-lang", "fr", "--out", str(tmp_path / "o2")])
    with pytest.raises(ValueError, match="--vocab-size 5000 is too large"):
        preparation.prepare(raw, tmp_path / "o3", "xx", "yy", vocab_size=5000)
    (raw / "valid.yy").write_text("".join("ZQ\n" for _ in range(6)))
    with pytest.raises(ValueError, match=r"valid\.xx has 5 lines but .*valid\.yy has 6"):
        preparation.prepare(raw, tmp_path / "o4", "xx", "yy")


@pytest.fixture(scope="module")
def trained(prepped):
    save = prepped / "model"
    wall = steps.train(prepped / "xx_yy" / "bin", save, [
        *TINY_ARCH, "--share-all-embeddings", "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--np-no-head-pruning", "--optimizer", "adam", "--lr", "0.005", "--max-tokens", "2000", "--max-update", "150",
        "--log-interval", "10", "--max-source-positions", str(MAX_POS), "--max-target-positions", str(MAX_POS)],
        logfile=prepped / "train.log")
    assert wall > 0
    return save / "checkpoint_last.pt"


def test_train_on_prepared_pair(trained, prepped):
    log = (prepped / "train.log").read_text()
    # no --source-lang/--target-lang given: fairseq infers xx->yy from bin/ (joined dictionary)
    n = re.findall(r"\[(xx|yy)\] dictionary: (\d+) types", log)
    assert [x[0] for x in n] == ["xx", "yy"] and n[0][1] == n[1][1]
    losses = [float(x.split("loss=")[1].split(",")[0]) for x in log.splitlines() if "train_inner" in x and "loss=" in x]
    assert len(losses) >= 6 and losses[-1] < losses[0] - 1.0, losses


def _evaluate(args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "neuroprune_fairseq.recipes.evaluate", *map(str, args)],
                          capture_output=True, text=True, env=env)


def test_evaluate_raw_files_all_lines_and_bleu(trained, prepped, tmp_path):
    import sacrebleu
    import sentencepiece as spm

    prep = prepped / "xx_yy"
    sp = spm.SentencePieceProcessor(model_file=str(prep / "spm.model"))
    rng = random.Random(5)
    pairs = [_pair(rng, rng.randint(2, 9)) for _ in range(6)]
    longest_train = max(len(p) for p in sp.encode(datafiles.read_lines(prep / "raw" / "train.xx"), out_type=str))
    long_src, long_ref = _pair(rng, 60)
    n_long = len(sp.encode(long_src, out_type=str))
    assert 3 * longest_train < n_long < MAX_POS - 1
    pairs[2] = ("", "")  # an empty line
    pairs[4] = (long_src, long_ref)
    (tmp_path / "in.xx").write_text("".join(p[0] + "\n" for p in pairs))
    (tmp_path / "in.yy").write_text("".join(p[1] + "\n" for p in pairs))
    hyp = tmp_path / "hyps.txt"
    r = _evaluate(["--prep-dir", prep, "--path", trained, "--src", tmp_path / "in.xx", "--ref", tmp_path / "in.yy",
                   "--output", hyp])
    assert r.returncode == 0, r.stderr[-3000:]
    hyps = datafiles.read_lines(hyp)
    assert len(hyps) == 6  # one hypothesis per input line, the empty (3rd) and the long (5th) one included
    direct = sacrebleu.corpus_bleu(hyps, [[p[1] for p in pairs]])
    printed = [line for line in r.stdout.splitlines() if line.startswith("BLEU ")]
    assert printed == [f"BLEU {round(direct.score, 2):.2f}  nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"]
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert res["bleu"] == round(direct.score, 2) and res["n_hyps"] == res["n_src"] == res["n_refs"] == 6
    # an existing --output is kept without --overwrite
    r2 = _evaluate(["--prep-dir", prep, "--path", trained, "--src", tmp_path / "in.xx", "--output", hyp])
    assert r2.returncode != 0 and "pass --overwrite" in r2.stderr and datafiles.read_lines(hyp) == hyps
    # the raw-file path decodes the prepared test split exactly as fairseq-generate on PREP/bin does
    from neuroprune_fairseq.recipes import evaluate

    got = evaluate.translate(prep, trained, prep / "raw" / "test.xx", ref_file=prep / "raw" / "test.yy", batch_size=64)
    ref_gen = scoring.generate(prep / "bin", trained, batch_size=64, extra=scoring.gen_cap(prep))
    assert got["hyps"] == ref_gen["hyps"] and len(got["hyps"]) == 30
    ev = scoring.evaluate_prep(prep, trained)
    assert ev["n_hyps"] == 30 and ev["bleu"] == got["bleu"] == round(
        sacrebleu.corpus_bleu(ref_gen["hyps"], [datafiles.read_lines(prep / "raw" / "test.yy")]).score, 2)


def test_evaluate_bad_inputs(trained, prepped, tmp_path):
    prep = prepped / "xx_yy"
    (tmp_path / "a.xx").write_text("ka lo\nmi\n")
    (tmp_path / "a.yy").write_text("OKq\n")
    r = _evaluate(["--prep-dir", prep, "--path", trained, "--src", tmp_path / "a.xx", "--ref", tmp_path / "a.yy"])
    assert r.returncode != 0 and "has 1 lines but --src" in r.stderr
    (tmp_path / "long.xx").write_text("ka\n" + " ".join(["ka"] * 400) + "\n")
    r = _evaluate(["--prep-dir", prep, "--path", trained, "--src", tmp_path / "long.xx", "--output", tmp_path / "h"])
    assert r.returncode != 0 and "line(s) [2]" in r.stderr and f"max source positions ({MAX_POS}" in r.stderr
    assert not (tmp_path / "h").exists()
    # without --output the hypotheses (only they) go to stdout, one per input line
    r = _evaluate(["--prep-dir", prep, "--path", trained, "--src", tmp_path / "a.xx"])
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2 and '"n_hyps": 2' in r.stderr, r.stderr[-2000:]


def test_prepare_multi30k_layout_reversed_pair(tmp_path):
    root = os.environ.get("NEUROPRUNE_DATA")
    if not root or not (Path(root) / "multi30k").exists():
        pytest.skip("NEUROPRUNE_DATA is not set (path of the shared data folder)")
    m30k = Path(root) / "multi30k"
    raw = tmp_path / "m30k"
    raw.mkdir()
    for name, n in (("train", 400), ("val", 50), ("test_2016_flickr", 60)):
        for lang in ("de", "en"):
            lines = datafiles.read_lines(m30k / f"{name}.{lang}.gz")[:n]
            with gzip.open(raw / f"{name}.{lang}.gz", "wt", encoding="utf-8") as fh:
                fh.write("".join(x + "\n" for x in lines))
    out = tmp_path / "prep_en_de"
    preparation.prepare(raw, out, "en", "de", vocab_size=500)
    meta = json.loads((out / "prep.json").read_text())
    assert (meta["src_lang"], meta["tgt_lang"], meta["layout"]) == ("en", "de", "multi30k")
    assert {s: f["de"]["lines"] for s, f in meta["files"].items()} == {"train": 400, "valid": 50, "test": 60}
    assert datafiles.bin_langs(out / "bin") == ("en", "de")
    assert datafiles.read_lines(out / "raw" / "test.de") == [" ".join(x.split()) for x in
                                                           datafiles.read_lines(m30k / "test_2016_flickr.de.gz")[:60]]
    assert meta["gen_max_len_b"] >= 1


def test_extra_test_sets_prepared_with_training_dictionaries_and_scored(trained, prepped, tmp_path):
    """neuroprune-prepare --extra-test on a folder prepared before: the set is binarized with the
    training dictionaries (they stay byte-equal), neuroprune-evaluate --subset all scores it by name
    with the BLEU that decoding its raw files gives; a set whose sides differ in line count is
    refused with its name and writes nothing."""
    import shutil

    import sacrebleu
    import sentencepiece as spm
    from fairseq.data import Dictionary, data_utils

    prep = tmp_path / "xx_yy"
    shutil.copytree(prepped / "xx_yy", prep)
    dicts = {lang: (prep / "bin" / f"dict.{lang}.txt").read_bytes() for lang in ("xx", "yy")}
    meta0 = json.loads((prep / "prep.json").read_text())
    rng = random.Random(11)
    raw2 = tmp_path / "more"
    raw2.mkdir()
    pairs = [_pair(rng, rng.randint(2, 9)) for _ in range(12)]
    (raw2 / "t2.xx").write_text("".join(p[0] + "\n" for p in pairs))
    with gzip.open(raw2 / "t2.yy.gz", "wt", encoding="utf-8") as fh:
        fh.write("".join(p[1] + "\n" for p in pairs))
    base = ["--data-dir", meta0["raw_dir"], "--src-lang", "xx", "--tgt-lang", "yy", "--out", str(prep)]
    prepare.main([*base, "--extra-test", f"t2={raw2 / 't2'}"])
    meta = json.loads((prep / "prep.json").read_text())
    assert meta["extra_tests"]["t2"]["yy"]["lines"] == 12 and meta["files"] == meta0["files"]
    assert meta["dict_sha256"] == meta0["dict_sha256"]
    assert all((prep / "bin" / f"dict.{lang}.txt").read_bytes() == b for lang, b in dicts.items())
    # the binary holds the training dictionary's ids of the sentencepiece pieces
    sp = spm.SentencePieceProcessor(model_file=str(prep / "spm.model"))
    d = Dictionary.load(str(prep / "bin" / "dict.xx.txt"))
    ds = data_utils.load_indexed_dataset(str(prep / "bin" / "t2.xx-yy.xx"), d)
    assert len(ds) == 12
    for i in (0, 5, 11):
        assert d.string(ds[i]) == " ".join(sp.encode(pairs[i][0], out_type=str))
    assert datafiles.read_lines(prep / "raw" / "t2.yy") == [p[1] for p in pairs]
    # again with the same files: kept; the same name from other files: refused
    prepare.main([*base, "--extra-test", f"t2={raw2 / 't2'}"])
    (raw2 / "bad.xx").write_text("ka lo\n" * 5)
    (raw2 / "bad.yy").write_text("OLq AKq\n" * 6)
    before = sorted(p.name for p in (prep / "bin").iterdir())
    with pytest.raises(SystemExit, match=r"test set bad: .*bad\.xx has 5 lines but .*bad\.yy has 6"):
        prepare.main([*base, "--extra-test", f"bad={raw2 / 'bad'}"])
    with pytest.raises(SystemExit, match="test set t2 is already in"):
        prepare.main([*base, "--extra-test", f"t2={raw2 / 'bad'}"])
    with pytest.raises(SystemExit, match="the set name 'valid' must"):
        prepare.main([*base, "--extra-test", f"valid={raw2 / 't2'}"])
    assert sorted(p.name for p in (prep / "bin").iterdir()) == before
    assert "bad" not in json.loads((prep / "prep.json").read_text())["extra_tests"]
    # scored by name, next to test and valid
    r = _evaluate(["--dataset", "multi30k", "--prep-dir", prep, "--path", trained, "--subset", "all"])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout[r.stdout.index("{"):])
    assert list(res["bleu_sets"]) == ["test", "valid", "t2"]
    assert res["sets"]["t2"]["n_hyps"] == res["sets"]["t2"]["n_refs"] == 12
    from neuroprune_fairseq.recipes import evaluate

    got = evaluate.translate(prep, trained, raw2 / "t2.xx", ref_file=prep / "raw" / "t2.yy", batch_size=64)
    assert res["bleu_sets"]["t2"] == got["bleu"] == round(sacrebleu.corpus_bleu(got["hyps"], [[p[1] for p in pairs]]).score, 2)
    assert res["bleu_sets"]["test"] == res["bleu"] == scoring.evaluate_prep(prep, trained)["bleu"]
    r = _evaluate(["--dataset", "multi30k", "--prep-dir", prep, "--path", trained, "--subset", "test,t3"])
    assert r.returncode != 0 and "--subset t3" in r.stderr and "test, valid, t2" in r.stderr
