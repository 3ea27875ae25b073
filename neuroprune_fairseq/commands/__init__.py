"""Command-line tools: ``python -m neuroprune_fairseq.commands.<name>``."""
