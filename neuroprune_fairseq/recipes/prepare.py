#!/usr/bin/env python
"""Prepare a raw parallel corpus for fairseq, for any language pair:
joint sentencepiece BPE -> ``fairseq-preprocess --joined-dictionary``.

    neuroprune-prepare --data-dir RAW --src-lang X --tgt-lang Y --out PREP [--vocab-size 8000] [--workers 1]

Raw layouts (detected; a file may be plain or ``.gz``):

* ``multi30k``: ``train.{X,Y}``, ``val.{X,Y}``, ``test_2016_flickr.{X,Y}`` (Multi30k as it ships:
  de, en, fr, cs; any two of them, either direction);
* ``generic``: ``train.{X,Y}``, ``valid.{X,Y}``, ``test.{X,Y}``.

Output: ``PREP/raw/{train,valid,test}.{X,Y}`` (whitespace-normalised text; the references),
``PREP/spm.model``, ``PREP/spm/{split}.{lang}``, ``PREP/bin`` (fairseq binary, one pair) and
``PREP/prep.json`` (languages, layout, source files and line counts, vocabulary size and the
generation length cap ``--max-len-a 1.5 --max-len-b B``, B the smallest integer for which every
training target fits, in sentencepiece tokens, and ``dict_sha256``, the fingerprint of the
dictionaries that ``neuroprune-evaluate`` checks). Idempotent: returns at once when ``PREP/bin/.done``
exists for the same pair, --data-dir and --vocab-size (omitted: the one prepared); different
settings are an error naming them (``--overwrite`` rebuilds the folder). A vocabulary too large
for the corpus is an error naming ``--vocab-size``. Bad input is an error naming the file and the
fix, before anything is written: an empty split (or a training side with no text), a line that
is not UTF-8 (file, line and byte), ``--vocab-size`` <= 0; a failure leaves no partial folder.

``--extra-test NAME=PREFIX`` (repeatable; also on a folder prepared before): a further test set of the
same pair, PREFIX.{X,Y}, binarized with the training dictionaries as split NAME
(:mod:`~neuroprune_fairseq.recipes.extra_sets`); a set whose two sides differ in line count is refused
with its name.
"""
import argparse

from neuroprune_fairseq.recipes import datafiles, extra_sets
from neuroprune_fairseq.recipes.preparation import DEFAULT_VOCAB, prepare


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", help="raw corpus folder (default $NEUROPRUNE_DATA/multi30k)")
    p.add_argument("--src-lang", required=True, help="source language suffix of the raw files, e.g. de")
    p.add_argument("--tgt-lang", required=True, help="target language suffix, e.g. en")
    p.add_argument("--out", required=True, help="output folder (raw/, spm.model, spm/, bin/, prep.json)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help=f"joint sentencepiece BPE vocabulary size (default {DEFAULT_VOCAB}; for an existing --out: the one it was prepared with)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--extra-test", action="append", default=[], metavar="NAME=PREFIX",
                   help="a further test set of the pair (PREFIX.SRC, PREFIX.TGT, plain or .gz), binarized with the "
                        "training dictionaries as split NAME; repeatable; scored by neuroprune-evaluate --subset NAME|all")
    p.add_argument("--overwrite", action="store_true",
                   help="rebuild an existing --out prepared with other settings (default: refuse, naming the difference)")
    a = p.parse_args(argv)
    try:
        for spec in a.extra_test:  # a bad name is refused before anything is prepared
            extra_sets.parse_spec(spec)
        bin_dir = prepare(datafiles.data_dir(a.data_dir, "multi30k"), a.out, a.src_lang, a.tgt_lang, a.vocab_size, a.workers,
                          overwrite=a.overwrite)
        if a.extra_test:
            extra_sets.add_test_sets(a.out, a.extra_test)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"neuroprune-prepare: {e}")
    print(bin_dir)


if __name__ == "__main__":
    main()
