"""Experiment recipes: data preparation, training/evaluation drivers, sweeps, benchmarks.

They drive the stock fairseq command-line tools (and the HF adapters) as a user would. Install
with the ``recipes`` extra. This package is never imported by the fairseq ``--user-dir`` import
of :mod:`neuroprune_fairseq`; import its modules explicitly
(``from neuroprune_fairseq.recipes import scoring``).

The shared pieces, one concern each: ``runner`` (subprocesses, the log line), ``datafiles`` (text
files, a prepared folder's layout), ``presets`` (model and schedule presets, ``THETA``),
``steps`` (the ``fairseq-train`` command line, finalisation, run-once markers), ``scoring``
(``fairseq-generate`` and BLEU), ``sweeps`` (point hashes, resume keys, row append) and
``hf_run`` (what the HF recipes share). Checkpoints are read through
:mod:`neuroprune_fairseq.fairseq_adapter.checkpoints`. A recipe imports these, never another recipe.
"""
