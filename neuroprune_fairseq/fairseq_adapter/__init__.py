"""The fairseq adapter: where NeuroPrune's roles live in fairseq models, and the registered
model, criteria and tasks. Importing this package registers nothing; ``neuroprune_fairseq.plugin``
(loaded by ``--user-dir neuroprune_fairseq``) does.
"""
