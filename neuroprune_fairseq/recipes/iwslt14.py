#!/usr/bin/env python
"""IWSLT14 German-English, prepared exactly as fairseq's ``examples/translation/prepare-iwslt14.sh``
(the splits every IWSLT14 de-en paper reports, DSP included), in Python with maintained libraries:

* Moses tokenisation: ``sacremoses`` (the Python port of ``tokenizer.perl``, same rules,
  same ``&apos;`` escaping), then lowercasing;
* length cleaning as ``clean-corpus-n.perl -ratio 1.5 ... 1 175`` (on the tokenized,
  cased training text, as the shell script does);
* valid = every 23rd line of the cleaned training data, train = the rest;
  test = dev2010 + dev2012 (TEDX) + tst2010 + tst2011 + tst2012 (6,750 pairs);
* 10,000 joint BPE merges with ``subword-nmt`` (learned on train.de + train.en), i.e. the
  very BPE of the standard data: we keep subword-nmt rather than sentencepiece so that
  the binarized data, the vocabulary and the tokenized BLEU are those of the literature;
* ``fairseq-preprocess --joined-dictionary``.

    python examples/iwslt14_de_en/prepare.py --out DIR                 # downloads de-en.tgz
    python examples/iwslt14_de_en/prepare.py --out DIR --raw-dir RAW   # RAW = extracted de-en/ folder (or the .tgz)

Output: DIR/tok/{train,valid,test}.{de,en} (tokenized, lowercased), DIR/code (BPE merges),
DIR/bpe/*, DIR/raw/test.{de,en} (untokenized references), DIR/bin (fairseq binary).
"""
import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

URL = "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
SRC, TGT = "de", "en"
TEST_PARTS = ["IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010", "IWSLT14.TED.tst2011",
              "IWSLT14.TED.tst2012"]
BPE_MERGES = 10000
_DROP = ("<url>", "<talkid>", "<keywords>")
_SEG = re.compile(r'<seg id="?\d+"?>\s*(.*?)\s*</seg>')


def tokenizers():
    from sacremoses import MosesTokenizer

    return {lang: MosesTokenizer(lang=lang) for lang in (SRC, TGT)}


def tokenize(line: str, tok) -> str:
    """``tokenizer.perl -l LANG`` (default escaping) then ``lowercase.perl``."""
    return tok.tokenize(line, escape=True, return_str=True, aggressive_dash_splits=False).lower()


def train_lines(text: str):
    """The train.tags file: drop the metadata lines, strip title/description tags."""
    out = []
    for line in text.splitlines():
        if any(t in line for t in _DROP):
            continue
        for t in ("<title>", "</title>", "<description>", "</description>"):
            line = line.replace(t, "")
        out.append(line)
    return out


def xml_segments(text: str):
    """Segments of an IWSLT .xml file (``grep '<seg id'`` and the sed of the shell script)."""
    out = []
    for line in text.splitlines():
        if "<seg id" not in line:
            continue
        m = _SEG.search(line)
        out.append((m.group(1) if m else "").replace("\u2019", "'"))
    return out


def clean_pairs(src, tgt, ratio=1.5, min_len=1, max_len=175):
    """``clean-corpus-n.perl -ratio RATIO ... MIN MAX`` on whitespace tokens; returns kept indices."""
    keep = []
    for i, (s, t) in enumerate(zip(src, tgt)):
        ns, nt = len(s.split()), len(t.split())
        if ns < min_len or nt < min_len or ns > max_len or nt > max_len:
            continue
        if ns / nt > ratio or nt / ns > ratio:
            continue
        keep.append(i)
    return keep


def split_valid(lines, every=23):
    """prepare-iwslt14.sh: valid = lines whose 1-based number is a multiple of 23, train = the rest."""
    valid = [x for i, x in enumerate(lines, 1) if i % every == 0]
    train = [x for i, x in enumerate(lines, 1) if i % every != 0]
    return train, valid


def write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(x + "\n" for x in lines), encoding="utf-8")


def read(path):
    return Path(path).read_text(encoding="utf-8").splitlines()


def learn_bpe(inputs, code_path, merges=BPE_MERGES):
    """subword-nmt learn_bpe on the concatenation of the inputs (as the shell script)."""
    from subword_nmt.learn_bpe import learn_bpe as _learn

    cat = code_path.parent / "train.en-de.tmp"
    with open(cat, "w", encoding="utf-8") as fh:
        for p in inputs:
            fh.write(Path(p).read_text(encoding="utf-8"))
    with open(cat, encoding="utf-8") as fin, open(code_path, "w", encoding="utf-8") as fout:
        _learn(fin, fout, merges)
    cat.unlink()


def apply_bpe(code_path, lines):
    from subword_nmt.apply_bpe import BPE

    with open(code_path, encoding="utf-8") as fh:
        bpe = BPE(fh)
    return [bpe.process_line(x + "\n").rstrip("\n") for x in lines]


def find_raw(raw_dir: Path) -> Path:
    if raw_dir.is_file():  # a .tgz
        dest = raw_dir.parent / "iwslt14_extracted"
        with tarfile.open(raw_dir) as tf:
            tf.extractall(dest)
        raw_dir = dest
    for p in [raw_dir, raw_dir / "de-en", *raw_dir.glob("*/")]:
        if (p / f"train.tags.de-en.{SRC}").exists():
            return p
    raise SystemExit(f"no train.tags.de-en.{SRC} under {raw_dir}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--raw-dir", help="extracted de-en/ folder (train.tags.de-en.*, IWSLT14.*.xml) or de-en.tgz; default: download")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip-binarize", action="store_true")
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.raw_dir:
        raw = find_raw(Path(a.raw_dir))
    else:
        tgz = out / "de-en.tgz"
        if not tgz.exists():
            print(f"downloading {URL}", flush=True)
            urllib.request.urlretrieve(URL, tgz)
        raw = find_raw(tgz)
    tok = tokenizers()
    # training data: tokenize (cased), clean, lowercase, split off valid
    cased = {lang: [tok[lang].tokenize(x, escape=True, return_str=True)
                    for x in train_lines((raw / f"train.tags.de-en.{lang}").read_text(encoding="utf-8"))]
             for lang in (SRC, TGT)}
    keep = clean_pairs(cased[SRC], cased[TGT])
    print(f"train: {len(cased[SRC])} pairs, {len(keep)} after length cleaning", flush=True)
    for lang in (SRC, TGT):
        lines = [cased[lang][i].lower() for i in keep]
        train, valid = split_valid(lines)
        write(out / "tok" / f"train.{lang}", train)
        write(out / "tok" / f"valid.{lang}", valid)
        # test: the five xml sets, concatenated in prepare-iwslt14.sh's order
        test_raw = []
        for part in TEST_PARTS:
            test_raw += xml_segments((raw / f"{part}.de-en.{lang}.xml").read_text(encoding="utf-8"))
        write(out / "raw" / f"test.{lang}", [html.unescape(x) for x in test_raw])
        write(out / "tok" / f"test.{lang}", [tokenize(x, tok[lang]) for x in test_raw])
    n = {s: len(read(out / "tok" / f"{s}.{SRC}")) for s in ("train", "valid", "test")}
    print(f"split sizes: {n} (standard: train 160239, valid 7283, test 6750)", flush=True)
    learn_bpe([out / "tok" / f"train.{SRC}", out / "tok" / f"train.{TGT}"], out / "code")
    for s in ("train", "valid", "test"):
        for lang in (SRC, TGT):
            write(out / "bpe" / f"{s}.{lang}", apply_bpe(out / "code", read(out / "tok" / f"{s}.{lang}")))
    if not a.skip_binarize:
        binarize(out / "bpe", out / "bin", a.workers)
    print(f"done: {out}")


def binarize(bpe_dir, dest, workers=1, splits=("train", "valid", "test")):
    exe = shutil.which("fairseq-preprocess") or str(Path(sys.executable).parent / "fairseq-preprocess")
    cmd = [exe, "--source-lang", SRC, "--target-lang", TGT, "--destdir", str(dest), "--joined-dictionary",
           "--workers", str(workers)]
    for s, flag in zip(splits, ("--trainpref", "--validpref", "--testpref")):
        cmd += [flag, str(Path(bpe_dir) / s)]
    subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
