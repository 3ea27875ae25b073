#!/usr/bin/env python
"""Thin entry point: the code lives in ``neuroprune_fairseq.recipes.evaluate`` (installed with the
``recipes`` extra; ``python -m neuroprune_fairseq.recipes.evaluate --help`` is the same command)."""
from neuroprune_fairseq.recipes.evaluate import main

if __name__ == "__main__":
    main()
