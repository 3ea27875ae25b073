"""Translation and BLEU: ``fairseq-generate`` on a whole split, sacrebleu against the raw
references, refusing to score fewer hypotheses than references."""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import datafiles, runner

_TRANSLATED = re.compile(r"Translated ([\d,]+) sentences \(([\d,]+) tokens\) in ([\d.]+)s \(([\d.]+) sentences/s, ([\d.]+) tokens/s\)")


def generate(bin_dir: Path, ckpt: Path, subset: str = "test", beam: int = 5, batch_size: int = 64,
             post_process: str = "sentencepiece", extra: Sequence[str] = (), threads: Optional[int] = None,
             logfile: Optional[Path] = None) -> Dict:
    """Beam search on a whole binarized split. Returns hyps ordered by sentence id, the
    number of source sentences of the split, and fairseq's throughput figures.

    No size filter drops sentences: ``--skip-invalid-size-inputs-valid-test`` is off and
    max positions are large, so fairseq fails loudly instead of silently skipping.
    """
    cmd = [runner.tool("fairseq-generate"), bin_dir, "--user-dir", runner.USER_DIR, "--path", ckpt, "--gen-subset", subset,
           "--beam", str(beam), "--batch-size", str(batch_size), "--post-process", post_process,
           "--max-source-positions", "1024", "--max-target-positions", "1024", "--num-workers", "0", "--required-batch-size-multiple", "1", *extra]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    runner.log("$ " + " ".join(runner.quote(str(c)) for c in cmd))
    t0 = time.time()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    wall = time.time() - t0
    if logfile:
        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        Path(logfile).write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"fairseq-generate failed:\n{r.stderr[-3000:]}")
    hyps: Dict[int, str] = {}
    for line in r.stdout.splitlines():
        if line.startswith("H-"):
            idx, _score, *text = line.split("\t")
            hyps[int(idx[2:])] = text[0] if text else ""
    m = _TRANSLATED.search(r.stdout + r.stderr)
    src = datafiles.src_path(bin_dir, subset)
    n_src = len(datafiles.read_lines(src)) if src else None
    out = {"hyps": [hyps[i] for i in sorted(hyps)], "ids": sorted(hyps), "wall_s": wall, "n_src": n_src}
    if m:
        out.update(sentences=int(m.group(1).replace(",", "")), gen_s=float(m.group(3)),
                   sentences_per_s=float(m.group(4)), tokens_per_s=float(m.group(5)))
    return out


def sacrebleu_score(hyps: Sequence[str], refs: Sequence[str], tokenize: Optional[str] = None,
                    lowercase: bool = False, trg_lang: str = "") -> Tuple[float, str]:
    """Corpus BLEU and its signature. Refuses to score fewer hypotheses than references.
    ``trg_lang``: sacrebleu's per-language default tokenizer (zh, ja-mecab, ko-mecab; else 13a)."""
    import sacrebleu

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references: not a test-set BLEU")
    kw = {"lowercase": lowercase, "trg_lang": trg_lang}
    if tokenize:
        kw["tokenize"] = tokenize
    metric = sacrebleu.metrics.BLEU(**kw)
    res = metric.corpus_score(list(hyps), [list(refs)])
    return res.score, str(metric.get_signature())


# Multi30k de-en, measured: no English side of the 29,000 training pairs is longer than
# 1.5 x German + 12 sentencepiece tokens. Only for a prep folder made before prep.json existed.
LEGACY_GEN_CAP = (1.5, 12)


def gen_cap(prep_dir: Path) -> List[str]:
    """``--max-len-a/--max-len-b`` of a prepared folder (``prep.json``; see recipes.preparation). The cap
    lets every training target through and stops degenerate (heavily pruned) models from looping."""
    meta = Path(prep_dir) / "prep.json"
    a, b = LEGACY_GEN_CAP
    if meta.exists():
        m = json.loads(meta.read_text())
        a, b = m["gen_max_len_a"], m["gen_max_len_b"]
    return ["--max-len-a", f"{a:g}", "--max-len-b", str(b)]


def score_sets(prep_dir: Path, ckpt: Path, subsets, logfile_of, beam: int = 5, batch_size: int = 64) -> Dict[str, Dict]:
    """:func:`evaluate_prep` of each split in ``subsets`` (in order), keyed by set name
    (:func:`datafiles.split_name`: Multi30k's test -> test_2016_flickr, valid -> val; an extra test set:
    its name); ``logfile_of(split)``: the generate log of each. A hypothesis count that differs from the
    reference count is an error naming the set."""
    out: Dict[str, Dict] = {}
    for sub in subsets:
        r = evaluate_prep(prep_dir, ckpt, subset=sub, beam=beam, batch_size=batch_size, logfile=logfile_of(sub))
        name = datafiles.split_name(prep_dir, sub)
        if not r["n_hyps_eq_n_refs"]:
            raise RuntimeError(f"{name}: {r['n_hyps']} hypotheses for {r['n_refs']} references")
        out[name] = r
    return out


def bin_gen_cap(bin_dir: Path, a: float = 1.5, margin: int = 10) -> List[str]:
    """A cap like ``prep.json``'s for a folder without one (IWSLT14): ``--max-len-a a --max-len-b B``, B the
    smallest integer with which every binarized training target (BPE tokens) fits ``a * source + B``, plus
    ``margin`` tokens to spare (choice: a test reference may be relatively longer than any training one).
    It only stops a degenerate model from writing 200-token loops (fairseq's default ``--max-len-b 200``),
    which otherwise dominate the decoding time of a whole test set; rows record it as ``gen_cap``."""
    from fairseq.data import Dictionary, data_utils

    from neuroprune_fairseq.recipes.preparation import gen_len_b

    src, tgt = datafiles.bin_langs(Path(bin_dir)) or ("de", "en")
    sizes = []
    for lang in (src, tgt):
        d = Dictionary.load(str(Path(bin_dir) / f"dict.{lang}.txt"))
        ds = data_utils.load_indexed_dataset(str(Path(bin_dir) / f"train.{src}-{tgt}.{lang}"), d)
        sizes.append([int(n) for n in ds.sizes])  # (ds kept alive: its sizes are a view of its memory map)
    return ["--max-len-a", f"{a:g}", "--max-len-b", str(gen_len_b(sizes[0], sizes[1], a) + margin)]


def evaluate_prep(prep_dir: Path, ckpt: Path, subset: str = "test", beam: int = 5, batch_size: int = 64,
                  logfile: Optional[Path] = None) -> Dict:
    """Detokenized cased sacrebleu of a split of a ``neuroprune-prepare`` folder against its raw
    references ``raw/{subset}.{tgt}`` (Multi30k: test = test_2016_flickr, 1000 lines)."""
    prep_dir = Path(prep_dir)
    _src, tgt = datafiles.prep_langs(prep_dir)
    gen = generate(prep_dir / "bin", ckpt, subset=subset, beam=beam, batch_size=batch_size, logfile=logfile,
                   extra=gen_cap(prep_dir))
    refs = datafiles.read_lines(prep_dir / "raw" / f"{subset}.{tgt}")
    bleu, sig = sacrebleu_score(gen["hyps"], refs, trg_lang=tgt)
    return {"bleu": round(bleu, 2), "sacrebleu_signature": sig, "n_hyps": len(gen["hyps"]), "n_refs": len(refs),
            "n_hyps_eq_n_refs": len(gen["hyps"]) == len(refs), "gen_sentences_per_s": gen.get("sentences_per_s"),
            "gen_wall_s": round(gen["wall_s"], 2)}


def evaluate_iwslt(prep_dir: Path, ckpt: Path, subset: str = "test", beam: int = 5, batch_size: int = 128,
                   logfile: Optional[Path] = None) -> Dict:
    """IWSLT14 (de-en; prepared by examples/iwslt14_de_en/prepare.py): beam search with BPE
    removed, then two BLEUs:

    * ``bleu``: sacrebleu (13a, lowercase) on Moses-detokenized hypotheses against the
      untokenized references ``raw/test.en`` (``tok/test.en`` detokenized where raw is absent),
      with its signature;
    * ``bleu_tok``: tokenized BLEU as fairseq and the DSP paper report it (lowercased,
      Moses-tokenized hypotheses vs ``tok/test.en``, no further tokenisation), labelled as such.
    """
    from sacremoses import MosesDetokenizer

    prep_dir = Path(prep_dir)
    _src, tgt = datafiles.bin_langs(prep_dir / "bin") or ("de", "en")  # IWSLT14 de-en, the pair iwslt14.py prepares
    cap = bin_gen_cap(prep_dir / "bin")
    gen = generate(prep_dir / "bin", ckpt, subset=subset, beam=beam, batch_size=batch_size,
                   post_process="subword_nmt", extra=cap, logfile=logfile)
    tok_refs = datafiles.read_lines(prep_dir / "tok" / f"{subset}.{tgt}")
    md = MosesDetokenizer(lang=tgt)
    detok = [md.detokenize(h.split(), unescape=True) for h in gen["hyps"]]
    raw = prep_dir / "raw" / f"{subset}.{tgt}"
    refs = datafiles.read_lines(raw) if raw.exists() else [md.detokenize(r.split(), unescape=True) for r in tok_refs]
    bleu, sig = sacrebleu_score(detok, refs, lowercase=True)
    bleu_tok, sig_tok = sacrebleu_score(gen["hyps"], tok_refs, tokenize="none")
    return {"bleu": round(bleu, 2), "sacrebleu_signature": sig, "bleu_tok": round(bleu_tok, 2),
            "bleu_tok_note": "tokenized BLEU (Moses tok, lowercased; sacrebleu tokenize=none), as fairseq/DSP report",
            "n_hyps": len(gen["hyps"]), "n_refs": len(tok_refs), "n_hyps_eq_n_refs": len(gen["hyps"]) == len(tok_refs),
            "gen_sentences_per_s": gen.get("sentences_per_s"), "gen_wall_s": round(gen["wall_s"], 2),
            "gen_cap": " ".join(cap)}
