#!/usr/bin/env python
"""Thin entry point: the code lives in ``neuroprune_fairseq.recipes.iwslt14`` (installed with the
``recipes`` extra; ``python -m neuroprune_fairseq.recipes.iwslt14 --help`` is the same command)."""
from neuroprune_fairseq.recipes.iwslt14 import main

if __name__ == "__main__":
    main()
