"""The fairseq adapter: where NeuroPrune's roles live in fairseq models, and the registered
model, criteria and tasks. Importing this package registers nothing; ``neuroprune_fairseq.plugin``
(loaded by ``--user-dir neuroprune_fairseq`` or ``neuroprune_fairseq.register()``) does. What the
task, its criterion and its sparsifier ask of each other is declared in :mod:`.contracts`; the
core's model facade on a fairseq model is :class:`.sites.FairseqModel`.
"""
