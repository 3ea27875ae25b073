"""NeuroPrune for fairseq (``--user-dir neuroprune_fairseq``) and HuggingFace models.

* :mod:`neuroprune_fairseq.core` -- the paper's math and the pruning policy, torch only;
* :mod:`neuroprune_fairseq.fairseq_adapter` -- fairseq: sites, model, criteria, tasks, DSP;
* :mod:`neuroprune_fairseq.hf` -- HuggingFace transformers (imports transformers lazily);
* :mod:`neuroprune_fairseq.commands` -- finalize, theta_scan, dsp_finalize, head_importance.

The fairseq components register themselves when fairseq loads this package with
``--user-dir neuroprune_fairseq``, and only then: importing the package otherwise (for
example ``import neuroprune_fairseq.hf``) imports no fairseq code, even when fairseq is
installed or already imported. ``import neuroprune_fairseq.plugin`` registers them by hand
(needed when this package was imported before fairseq's ``--user-dir`` import, which then
skips it).
"""
import sys

from . import core  # noqa: F401  (torch only)

__version__ = "0.1.0"


def _imported_by_fairseq_user_dir() -> bool:
    """Whether fairseq's ``utils.import_user_module`` (``--user-dir``) is importing this package."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "import_user_module" and frame.f_globals.get("__name__") == "fairseq.utils":
            return True
        frame = frame.f_back
    return False


if "fairseq" in sys.modules and _imported_by_fairseq_user_dir():
    from . import plugin  # noqa: F401  (registers criteria, tasks, models)
