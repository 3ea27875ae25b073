"""Experiment recipes: data preparation, training/evaluation drivers, sweeps, benchmarks.

They drive the stock fairseq command-line tools (and the HF adapters) as a user would. Install
with the ``recipes`` extra. This package is never imported by the fairseq ``--user-dir`` import
of :mod:`neuroprune_fairseq`; import its modules explicitly
(``from neuroprune_fairseq.recipes import common``).
"""
