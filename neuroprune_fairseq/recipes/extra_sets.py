"""Further test sets of a prepared folder (``neuroprune-prepare --extra-test NAME=PREFIX``): raw files of
the same pair, encoded with the folder's sentencepiece model and binarized with its *training*
dictionaries (``fairseq-preprocess --srcdict/--tgtdict``), so every checkpoint trained on the folder
decodes them. Each set is a split of ``PREP/bin`` named NAME (``fairseq-generate --gen-subset NAME``),
with its references in ``PREP/raw/NAME.TGT``; ``prep.json`` lists them under ``extra_tests``.

Researchers report several test sets (Multi30k: test_2016_flickr, test_2017_flickr, ...; WMT: several
newstest years); :func:`scored_sets` names what ``neuroprune-evaluate --subset all`` scores.
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from neuroprune_fairseq.recipes import datafiles, runner
from neuroprune_fairseq.recipes.preparation import raw_file

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
RESERVED = ("train", "valid", "test")


def parse_spec(spec: str) -> Tuple[str, Path]:
    """``NAME=PREFIX`` or ``PREFIX`` (the name is then PREFIX's file name) -> (name, prefix);
    the files are PREFIX.SRC and PREFIX.TGT, plain or ``.gz``."""
    name, sep, prefix = spec.partition("=")
    if not sep:
        name, prefix = Path(spec).name, spec
    if not NAME.match(name) or name in RESERVED:
        raise ValueError(f"--extra-test {spec!r}: the set name {name!r} must start with a letter, hold only letters, "
                         f"digits, '_' and '-', and not be one of {', '.join(RESERVED)}; write NAME=PREFIX, "
                         "e.g. test_2017_flickr=data/multi30k/test_2017_flickr")
    return name, Path(prefix)


def _file(prefix: Path, lang: str) -> Optional[Path]:
    return raw_file(prefix.parent, prefix.name, lang)


def read_set(name: str, prefix: Path, src: str, tgt: str) -> Dict[str, List[str]]:
    """Both sides of one set, whitespace-normalised; refused (naming the set) when a file is missing,
    the sides differ in line count or the set is empty."""
    from neuroprune_fairseq.recipes.preparation import read_text_lines

    paths = {lang: _file(prefix, lang) for lang in (src, tgt)}
    missing = [f"{prefix}.{lang}[.gz]" for lang, p in paths.items() if p is None]
    if missing:
        raise FileNotFoundError(f"test set {name}: no {' and no '.join(missing)}; give NAME=PREFIX with "
                                f"PREFIX.{src} and PREFIX.{tgt} (plain or .gz)")
    pair = {lang: [" ".join(s.split()) for s in read_text_lines(p)] for lang, p in paths.items()}
    if len(pair[src]) != len(pair[tgt]):
        raise ValueError(f"test set {name}: {paths[src]} has {len(pair[src])} lines but {paths[tgt]} has "
                         f"{len(pair[tgt])}: the two sides must be line-aligned")
    if not pair[src]:
        raise ValueError(f"test set {name}: {paths[src]} and {paths[tgt]} have no lines")
    return {"paths": paths, **pair}


def add_test_sets(prep_dir, specs: Sequence[str]) -> List[str]:
    """Add the sets ``specs`` (``NAME=PREFIX``) to a prepared folder; returns their names. Every set is
    read and checked before anything is written. A set already there from the same files is kept;
    the same name from other files is refused."""
    prep_dir = Path(prep_dir)
    meta_path = prep_dir / "prep.json"
    if not (prep_dir / "bin" / ".done").exists() or not meta_path.exists():
        raise FileNotFoundError(f"{prep_dir} is not a prepared folder (no bin/.done or prep.json): run "
                                "neuroprune-prepare first")
    meta = json.loads(meta_path.read_text())
    src, tgt = meta["src_lang"], meta["tgt_lang"]
    extra = meta.setdefault("extra_tests", {})
    todo, names = {}, []
    for spec in specs:
        name, prefix = parse_spec(spec)
        if name in names:
            raise ValueError(f"--extra-test: the set name {name} is given twice")
        names.append(name)
        have = extra.get(name)
        if have is not None:
            paths = {lang: _file(prefix, lang) for lang in (src, tgt)}
            if any(p is None or have[lang]["path"] != str(p.resolve()) for lang, p in paths.items()):
                raise ValueError(f"test set {name} is already in {prep_dir} from {have[src]['path']}: give this "
                                 "one another name")
            continue
        todo[name] = read_set(name, prefix, src, tgt)
    for name, s in todo.items():
        _binarize(prep_dir, name, s, src, tgt)
        extra[name] = {lang: {"path": str(s["paths"][lang].resolve()), "lines": len(s[lang])} for lang in (src, tgt)}
        runner.log(f"test set {name}: {len(s[src])} {src}-{tgt} pairs, binarized with {prep_dir / 'bin'}'s dictionaries")
    meta_path.write_text(json.dumps(meta, indent=1))
    return names


def _binarize(prep_dir: Path, name: str, s: dict, src: str, tgt: str) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(prep_dir / "spm.model"))
    bin_dir = prep_dir / "bin"
    tmp = Path(tempfile.mkdtemp(prefix="neuroprune_extra_", dir=prep_dir))
    try:
        for lang in (src, tgt):
            pieces = sp.encode(s[lang], out_type=str)
            datafiles.write_lines(tmp / "spm" / f"test.{lang}", [" ".join(p) for p in pieces])
        runner.run([runner.tool("fairseq-preprocess"), "--source-lang", src, "--target-lang", tgt,
                    "--testpref", tmp / "spm" / "test", "--destdir", tmp / "bin",
                    "--srcdict", bin_dir / f"dict.{src}.txt", "--tgtdict", bin_dir / f"dict.{tgt}.txt",
                    "--workers", "1"], logfile=prep_dir / f"preprocess.{name}.log")
        for lang in (src, tgt):
            datafiles.write_lines(prep_dir / "raw" / f"{name}.{lang}", s[lang])
            shutil.copy(tmp / "spm" / f"test.{lang}", prep_dir / "spm" / f"{name}.{lang}")
            for ext in ("bin", "idx"):
                shutil.copy(tmp / "bin" / f"test.{src}-{tgt}.{lang}.{ext}", bin_dir / f"{name}.{src}-{tgt}.{lang}.{ext}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def extra_names(prep_dir) -> List[str]:
    meta = Path(prep_dir) / "prep.json"
    return list(json.loads(meta.read_text()).get("extra_tests", {})) if meta.exists() else []


def scored_sets(prep_dir, subsets: str) -> List[str]:
    """``--subset`` of neuroprune-evaluate: comma-separated splits; ``all`` = test, valid and every
    extra test set of the folder. Unknown splits are refused, naming those the folder has."""
    have = ["test", "valid", *extra_names(prep_dir)]
    out = []
    for s in (x.strip() for x in subsets.split(",")):
        for t in (have if s == "all" else [s]):
            if t not in have:
                raise ValueError(f"--subset {t}: {prep_dir} has no such split (it has {', '.join(have)}); add a "
                                 "test set with neuroprune-prepare --extra-test NAME=PREFIX")
            if t not in out:
                out.append(t)
    return out
