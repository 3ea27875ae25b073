#!/usr/bin/env python
"""Thin entry point: the code lives in ``neuroprune_fairseq.recipes.bench_ddp`` (installed with the
``recipes`` extra; ``python -m neuroprune_fairseq.recipes.bench_ddp --help`` is the same command)."""
from neuroprune_fairseq.recipes.bench_ddp import main

if __name__ == "__main__":
    main()
