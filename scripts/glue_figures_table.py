#!/usr/bin/env python
"""Thin entry point: the code lives in ``neuroprune_fairseq.recipes.glue_figures``."""
from neuroprune_fairseq.recipes.glue_figures import main

if __name__ == "__main__":
    main()
