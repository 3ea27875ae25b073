"""Import the fairseq components explicitly, as fairseq's own --user-dir examples do."""
from . import checkpoint_compat  # noqa: F401  (torch>=2.6 weights_only loading)
from . import model  # noqa: F401
from . import criterion  # noqa: F401
from . import task  # noqa: F401
from . import dsp_fairseq  # noqa: F401  (DSP baseline: criterion dsp_ce, task dsp_translation)
