"""A fingerprint of a translation model's dictionaries.

fairseq keeps no dictionary in a checkpoint: it reads ``dict.{src,tgt}.txt`` from whatever data
folder decoding is given, and a folder whose dictionaries have the same size but other tokens
decodes into word salad without an error. The fingerprint is the sha256 of the symbols in index
order (source, then target; counts are left out: they do not change what an index means).
``neuroprune_translation`` stores it in every checkpoint it writes (``task_state``),
``neuroprune-prepare`` in ``prep.json``, and ``neuroprune-evaluate`` compares them.
"""
import hashlib
import os
from typing import Optional, Sequence

TASK_STATE_KEY = "neuroprune_dict_sha256"


def fingerprint(dicts: Sequence) -> str:
    """sha256 over the symbols of fairseq ``Dictionary`` objects, in order."""
    h = hashlib.sha256()
    for d in dicts:
        for sym in d.symbols:
            h.update(sym.encode("utf-8"))
            h.update(b"\n")
        h.update(b"\x00")  # the end of one dictionary
    return h.hexdigest()


def dict_files(bin_dir, src: str, tgt: str):
    return [os.path.join(str(bin_dir), f"dict.{lang}.txt") for lang in (src, tgt)]


def bin_fingerprint(bin_dir, src: str, tgt: str) -> Optional[str]:
    """The fingerprint of ``bin_dir/dict.{src,tgt}.txt`` as fairseq loads them; None when one is missing."""
    from fairseq.data import Dictionary

    files = dict_files(bin_dir, src, tgt)
    if not all(os.path.isfile(f) for f in files):
        return None
    return fingerprint([Dictionary.load(f) for f in files])


def dict_sizes(bin_dir, src: str, tgt: str):
    from fairseq.data import Dictionary

    return [len(Dictionary.load(f)) for f in dict_files(bin_dir, src, tgt)]
