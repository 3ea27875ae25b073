#!/usr/bin/env python
"""Thin entry point: the code lives in ``neuroprune_fairseq.recipes.hf_table`` (installed with the
``recipes`` extra; ``python -m neuroprune_fairseq.recipes.hf_table --help`` is the same command)."""
from neuroprune_fairseq.recipes.hf_table import main

if __name__ == "__main__":
    main()
