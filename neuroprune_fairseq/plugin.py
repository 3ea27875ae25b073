"""Import the fairseq components explicitly, as fairseq's own --user-dir examples do."""
from .fairseq_adapter import checkpoint_compat  # noqa: F401  (torch>=2.6 weights_only loading)
from .fairseq_adapter import model  # noqa: F401
from .fairseq_adapter import criterion  # noqa: F401
from .fairseq_adapter import task  # noqa: F401
from .fairseq_adapter import dsp_criterion  # noqa: F401  (DSP baseline: criterion dsp_ce)
from .fairseq_adapter import dsp_task  # noqa: F401  (DSP baseline: task dsp_translation)
