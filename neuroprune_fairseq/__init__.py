"""NeuroPrune for fairseq (``--user-dir neuroprune_fairseq``) and HuggingFace models.

* :mod:`neuroprune_fairseq.core` -- the paper's math and the pruning policy, torch only;
* :mod:`neuroprune_fairseq.fairseq_adapter` -- fairseq: sites, model, criteria, tasks, DSP;
* :mod:`neuroprune_fairseq.hf` -- HuggingFace transformers (imports transformers lazily);
* :mod:`neuroprune_fairseq.commands` -- finalize, theta_scan, dsp_finalize, head_importance.

Registration with fairseq is explicit: :func:`register` imports :mod:`neuroprune_fairseq.plugin`,
whose imports register the criteria, tasks and models (as fairseq's own ``--user-dir`` examples
do; Python imports a module once, so calling it again registers nothing twice). It runs by
itself in one case only: when fairseq's ``--user-dir`` loads this package
(``fairseq-train/-generate/... --user-dir neuroprune_fairseq``, or a checkpoint whose config
names it). fairseq's ``utils.import_user_module`` records the directory in its
``import_user_module.memo`` right before it imports the package, and that record is what is
checked here. Importing the package any other way (for example ``import neuroprune_fairseq.hf``)
imports no fairseq code, even when fairseq is installed or already imported. A program that
imported this package before fairseq's ``--user-dir`` import (fairseq then skips it as already
imported) calls ``neuroprune_fairseq.register()`` itself.
"""
import os
import sys

from . import core  # noqa: F401  (torch only)

__version__ = "0.1.0"


def register() -> None:
    """Register NeuroPrune's fairseq components (criteria ``neuroprune_ce``, ``l1_ce``,
    ``dsp_ce``; tasks ``neuroprune_translation``, ``dsp_translation``; model
    ``neuroprune_transformer`` and its architectures). Imports fairseq; idempotent."""
    from . import plugin  # noqa: F401


def _loading_as_fairseq_user_dir() -> bool:
    """Whether fairseq's ``utils.import_user_module`` (``--user-dir``) has recorded this
    package's directory, i.e. is importing it now (without fairseq loaded: no)."""
    utils = sys.modules.get("fairseq.utils")
    memo = getattr(getattr(utils, "import_user_module", None), "memo", None) or ()
    here = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    return any(os.path.realpath(str(path)) == here for path in memo)


if _loading_as_fairseq_user_dir():
    register()
