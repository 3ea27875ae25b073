#!/usr/bin/env python
"""Thin entry point: the code lives in ``neuroprune_fairseq.recipes.sweep_heads`` (installed with the
``recipes`` extra; ``python -m neuroprune_fairseq.recipes.sweep_heads --help`` is the same command)."""
from neuroprune_fairseq.recipes.sweep_heads import main

if __name__ == "__main__":
    main()
