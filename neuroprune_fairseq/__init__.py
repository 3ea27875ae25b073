"""NeuroPrune for fairseq (``--user-dir neuroprune_fairseq``) and HuggingFace models.

``neuroprune_fairseq.core`` is torch-only (the paper's math). The fairseq pieces register
themselves when this package is loaded by fairseq (``--user-dir``), i.e. when fairseq is
already imported; import :mod:`neuroprune_fairseq.plugin` to register them by hand.
The HuggingFace adapter lives in :mod:`neuroprune_fairseq.hf` and imports transformers
lazily.
"""
import sys

from . import core  # noqa: F401

__version__ = "0.1.0"

if "fairseq" in sys.modules:
    from . import plugin  # noqa: F401  (registers criterion, task, models)
