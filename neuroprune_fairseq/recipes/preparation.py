"""The preparation of a raw parallel corpus for fairseq (joint sentencepiece BPE ->
``fairseq-preprocess --joined-dictionary``): :func:`prepare` and its checks. The command
``neuroprune-prepare`` (:mod:`neuroprune_fairseq.recipes.prepare`) documents the layouts, the
output and the errors; the sweeps and the main job call :func:`prepare` from here.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from neuroprune_fairseq.recipes import datafiles, runner

LAYOUTS = {
    "multi30k": {"train": "train", "valid": "val", "test": "test_2016_flickr"},
    "generic": {"train": "train", "valid": "valid", "test": "test"},
}
GEN_LEN_A = 1.5


def raw_file(raw_dir: Path, name: str, lang: str):
    """``raw_dir/name.lang.gz`` or ``raw_dir/name.lang``, whichever exists (None: neither)."""
    for p in (raw_dir / f"{name}.{lang}.gz", raw_dir / f"{name}.{lang}"):
        if p.exists():
            return p
    return None


def _langs_found(raw_dir: Path, name: str) -> List[str]:
    found = set()
    for p in raw_dir.glob(f"{name}.*"):
        rest = p.name[len(name) + 1:]
        rest = rest[:-3] if rest.endswith(".gz") else rest
        if rest and "." not in rest:
            found.add(rest)
    return sorted(found)


def find_files(raw_dir: Path, src: str, tgt: str) -> Tuple[str, Dict[str, Dict[str, Path]]]:
    """(layout name, {split: {lang: path}}) for the pair; a clear error listing what exists otherwise."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise FileNotFoundError(f"--data-dir {raw_dir} is not a folder")
    if src == tgt:
        raise ValueError(f"--src-lang and --tgt-lang are both {src!r}")
    for layout, names in LAYOUTS.items():
        files = {split: {lang: raw_file(raw_dir, name, lang) for lang in (src, tgt)} for split, name in names.items()}
        if all(p is not None for f in files.values() for p in f.values()):
            return layout, files
    seen = "; ".join(f"{layout}: " + ", ".join(f"{name}.{{{','.join(_langs_found(raw_dir, name)) or 'none'}}}"
                                                 for name in names.values())
                     for layout, names in LAYOUTS.items())
    raise FileNotFoundError(
        f"{raw_dir} has no complete {src}-{tgt} corpus: need train/valid/test (or Multi30k's "
        f"train/val/test_2016_flickr) .{src} and .{tgt}, plain or .gz. Languages found per file: {seen}")


def gen_len_b(src_tok: Sequence[int], tgt_tok: Sequence[int], a: float = GEN_LEN_A) -> int:
    """Smallest integer b with len_tgt <= a * len_src + b for every pair (fairseq: max_len = int(a*src + b))."""
    return max(1, max((math.ceil(t - a * s) for s, t in zip(src_tok, tgt_tok)), default=1))


DEFAULT_VOCAB = 8000
OUTPUTS = ("raw", "spm", "bin", "spm.model", "spm.vocab", "prep.json", "preprocess.log")  # what prepare writes


def read_text_lines(path: Path) -> List[str]:
    """:func:`datafiles.read_lines`, with a non-UTF-8 byte reported by file, line and byte."""
    try:
        return datafiles.read_lines(path)
    except UnicodeDecodeError:
        pass
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}, line {n}: byte 0x{raw[e.start]:02x} at byte {e.start + 1} of the line "
                                 f"is not UTF-8 ({e.reason}); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) "
                                 "or fix that line") from None
    raise ValueError(f"{path} is not UTF-8 text; convert it to UTF-8")  # a multi-byte sequence cut by the end of file


def check_vocab_size(vocab_size) -> None:
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size <= 0:
        raise ValueError(f"--vocab-size must be a positive integer (the joint sentencepiece vocabulary, "
                         f"e.g. {DEFAULT_VOCAB}), got {vocab_size!r}")


def check_not_empty(split: str, paths: Dict[str, Path], pair: Dict[str, List[str]]) -> None:
    """An empty split (or a training side without text) fails later and far from its cause."""
    files = " and ".join(str(p) for p in paths.values())
    n = len(next(iter(pair.values())))
    if n == 0:
        raise ValueError(f"the {split} split is empty ({files} have no lines): every split needs sentence pairs; "
                         "fill the files, or point --data-dir at the complete corpus")
    if split == "train":
        for lang, lines in pair.items():
            if not any(lines):
                raise ValueError(f"{paths[lang]} has {n} lines but all are empty: sentencepiece has no {lang} text "
                                 "to train on; fill the file, or point --data-dir at the complete corpus")


def check_same_settings(out_dir: Path, m: Dict, raw_dir, vocab_size) -> None:
    """An existing prepared folder serves a re-run only for the same settings."""
    diffs = []
    if vocab_size is not None and m.get("vocab_size") is not None and int(m["vocab_size"]) != vocab_size:
        diffs.append(f"--vocab-size {vocab_size} (prepared with {m['vocab_size']})")
    if raw_dir is not None and m.get("raw_dir") and Path(raw_dir).resolve() != Path(m["raw_dir"]):
        diffs.append(f"--data-dir {Path(raw_dir).resolve()} (prepared from {m['raw_dir']})")
    if diffs:
        raise ValueError(f"{out_dir} is already prepared with other settings: " + "; ".join(diffs) +
                         ". Use another --out, or pass --overwrite to rebuild it")


def _remove_outputs(out_dir: Path) -> None:
    for name in OUTPUTS:
        q = out_dir / name
        if q.is_dir() and not q.is_symlink():
            shutil.rmtree(q)
        elif q.exists() or q.is_symlink():
            q.unlink()


def _train_spm(raw: Path, out_dir: Path, src: str, tgt: str, vocab_size: int, workers: int) -> None:
    import sentencepiece as spm

    try:
        spm.SentencePieceTrainer.train(
            input=[str(raw / f"train.{src}"), str(raw / f"train.{tgt}")], model_prefix=str(out_dir / "spm"),
            vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, input_sentence_size=10_000_000,
            num_threads=max(1, workers), minloglevel=2, bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0,
        )
    except RuntimeError as e:
        import re

        small = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
        if small:
            raise ValueError(f"--vocab-size {vocab_size} is too small for this training corpus: its characters "
                             f"and the unknown token need {small.group(2)} pieces (sentencepiece: {e}); pass "
                             f"--vocab-size {small.group(2)} or more") from e
        if "Vocabulary size" in str(e):
            raise ValueError(f"--vocab-size {vocab_size} is too large for this training corpus "
                             f"(sentencepiece: {e}); pass a smaller --vocab-size") from e
        raise


def prepare(raw_dir, out_dir, src_lang: str, tgt_lang: str, vocab_size: Optional[int] = None, workers: int = 1,
            overwrite: bool = False) -> Path:
    """Raw corpus -> ``out_dir/bin`` (returned). See the module docstring. ``vocab_size`` None:
    the prepared folder's, or :data:`DEFAULT_VOCAB` for a new one. ``overwrite``: rebuild a
    folder prepared with other settings."""
    out_dir = Path(out_dir)
    if vocab_size is not None:
        check_vocab_size(vocab_size)
    done, meta = out_dir / "bin" / ".done", out_dir / "prep.json"
    if done.exists():
        m = json.loads(meta.read_text()) if meta.exists() else {}
        if m and (m["src_lang"], m["tgt_lang"]) != (src_lang, tgt_lang) and not overwrite:
            raise ValueError(f"{out_dir} is prepared for {m['src_lang']}->{m['tgt_lang']}, not "
                             f"{src_lang}->{tgt_lang}: use another --out")
        if not overwrite:
            check_same_settings(out_dir, m, raw_dir, vocab_size)
            runner.log(f"{src_lang}->{tgt_lang} already prepared in {out_dir}")
            return out_dir / "bin"
        runner.log(f"--overwrite: rebuilding {out_dir}")
    vocab_size = DEFAULT_VOCAB if vocab_size is None else vocab_size
    layout, files = find_files(Path(raw_dir), src_lang, tgt_lang)
    for name in OUTPUTS:  # the corpus must survive a rebuild of the outputs
        if (out_dir / name).resolve() in (Path(raw_dir).resolve(), *Path(raw_dir).resolve().parents):
            raise ValueError(f"--data-dir {raw_dir} is inside --out {out_dir} ({name}/ is rewritten): "
                             "use another --out")
    # read and check every input before anything is written
    pairs, counts = {}, {}
    for split, paths in files.items():
        pair = {lang: [" ".join(s.split()) for s in read_text_lines(p)] for lang, p in paths.items()}
        if len(pair[src_lang]) != len(pair[tgt_lang]):
            raise ValueError(f"{split}: {paths[src_lang]} has {len(pair[src_lang])} lines but {paths[tgt_lang]} has "
                             f"{len(pair[tgt_lang])}: the two sides must be line-aligned")
        check_not_empty(split, paths, pair)
        pairs[split] = pair
        counts[split] = len(pair[src_lang])
    created = not out_dir.exists()
    try:
        return _write(out_dir, raw_dir, src_lang, tgt_lang, vocab_size, workers, layout, files, pairs, counts)
    except BaseException:
        # leave no partial output: what this call wrote goes (the folder too when it made it)
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        elif out_dir.is_dir():
            _remove_outputs(out_dir)
        raise


def _write(out_dir: Path, raw_dir, src_lang: str, tgt_lang: str, vocab_size: int, workers: int, layout: str,
           files, pairs, counts) -> Path:
    from ..fairseq_adapter.dictionaries import bin_fingerprint

    done, meta = out_dir / "bin" / ".done", out_dir / "prep.json"
    _remove_outputs(out_dir)  # an earlier failed or --overwrite'd preparation
    raw = out_dir / "raw"
    for split, pair in pairs.items():
        for lang, lines in pair.items():
            datafiles.write_lines(raw / f"{split}.{lang}", lines)
        runner.log(f"{split}: {counts[split]} {src_lang}-{tgt_lang} pairs ({layout} layout)")
    _train_spm(raw, out_dir, src_lang, tgt_lang, vocab_size, workers)
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(out_dir / "spm.model"))
    lengths = {}
    for split in LAYOUTS[layout]:
        for lang in (src_lang, tgt_lang):
            pieces = sp.encode(datafiles.read_lines(raw / f"{split}.{lang}"), out_type=str)
            datafiles.write_lines(out_dir / "spm" / f"{split}.{lang}", [" ".join(p) for p in pieces])
            if split == "train":
                lengths[lang] = [len(p) for p in pieces]
    b = gen_len_b(lengths[src_lang], lengths[tgt_lang])
    bin_dir = out_dir / "bin"
    if bin_dir.exists():
        shutil.rmtree(bin_dir)
    sp_pref = out_dir / "spm"
    runner.run([runner.tool("fairseq-preprocess"), "--source-lang", src_lang, "--target-lang", tgt_lang,
                "--trainpref", sp_pref / "train", "--validpref", sp_pref / "valid", "--testpref", sp_pref / "test",
                "--destdir", bin_dir, "--joined-dictionary", "--workers", str(workers)],
               logfile=out_dir / "preprocess.log")
    meta.write_text(json.dumps({
        "src_lang": src_lang, "tgt_lang": tgt_lang, "layout": layout, "raw_dir": str(Path(raw_dir).resolve()),
        "files": {s: {lang: {"path": str(p), "lines": counts[s]} for lang, p in f.items()} for s, f in files.items()},
        "vocab_size": vocab_size, "gen_max_len_a": GEN_LEN_A, "gen_max_len_b": b,
        "dict_sha256": bin_fingerprint(bin_dir, src_lang, tgt_lang),
    }, indent=1))
    runner.log(f"generation cap --max-len-a {GEN_LEN_A:g} --max-len-b {b} (every training target fits)")
    done.write_text("ok\n")
    return bin_dir
