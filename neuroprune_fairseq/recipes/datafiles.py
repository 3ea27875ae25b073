"""Text files and the layout of a prepared data folder (``neuroprune-prepare``'s output:
``raw/``, ``spm/`` or ``bpe/``, ``bin/``, ``prep.json``), read the same way by every recipe."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple


def data_dir(arg: Optional[str], sub: str = "") -> Path:
    """``--data-dir`` if given, else ``$NEUROPRUNE_DATA[/sub]``."""
    if arg:
        return Path(arg)
    env = os.environ.get("NEUROPRUNE_DATA")
    if not env:
        raise SystemExit("pass --data-dir PATH or set NEUROPRUNE_DATA")
    return Path(env) / sub if sub else Path(env)


def read_lines(path: Path) -> List[str]:
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line + "\n")


def write_json(path, obj) -> None:
    """``obj`` as indented JSON at ``path`` (its folder made if needed): a benchmark's result file."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1))


def bin_langs(bin_dir: Path) -> Optional[Tuple[str, str]]:
    """(source, target) of a fairseq bin dir holding one pair (from ``dict.X.txt`` + ``*.X-Y.X.idx``)."""
    pairs = {p.name.split(".")[1] for p in Path(bin_dir).glob("*.*-*.*.idx")}
    if len(pairs) != 1:
        return None
    src, tgt = pairs.pop().split("-", 1)
    return src, tgt


def prep_langs(prep_dir: Path) -> Tuple[str, str]:
    """(source, target) of a prepared folder: ``prep.json``, else its bin dir's file names."""
    meta = Path(prep_dir) / "prep.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        return m["src_lang"], m["tgt_lang"]
    langs = bin_langs(Path(prep_dir) / "bin")
    if langs is None:
        raise FileNotFoundError(f"{prep_dir}: no prep.json and no single language pair in {Path(prep_dir) / 'bin'}")
    return langs


def split_name(prep_dir: Path, subset: str) -> str:
    """The name a split is reported under: the stem of the raw file it was prepared from
    (prep.json; Multi30k: test -> test_2016_flickr, valid -> val), else the split name."""
    meta = Path(prep_dir) / "prep.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        f = m.get("files", {}).get(subset, {}).get(m["tgt_lang"], {}).get("path")
        if f:
            name = Path(f).name
            for suffix in (".gz", "." + m["tgt_lang"]):
                name = name[: -len(suffix)] if name.endswith(suffix) else name
            return name
    return subset


def src_path(bin_dir: Path, subset: str) -> Optional[Path]:
    """The text file fairseq binarized (for the sentence count), if it is where we put it."""
    langs = bin_langs(bin_dir)
    if langs is None:
        return None
    for sub in ("spm", "bpe"):
        p = Path(bin_dir).parent / sub / f"{subset}.{langs[0]}"
        if p.exists():
            return p
    return None
