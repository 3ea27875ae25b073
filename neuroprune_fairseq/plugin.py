"""Import the fairseq components explicitly, as fairseq's own --user-dir examples do."""
from .fairseq_adapter import checkpoint_compat  # noqa: F401  (torch>=2.6 weights_only loading)
from .fairseq_adapter.ddp import allow_cpu_c10d
from .fairseq_adapter import model  # noqa: F401
from .fairseq_adapter import criterion  # noqa: F401
from .fairseq_adapter import task  # noqa: F401
from .fairseq_adapter import dsp_criterion  # noqa: F401  (DSP baseline: criterion dsp_ce)
from .fairseq_adapter import dsp_task  # noqa: F401  (DSP baseline: task dsp_translation)

allow_cpu_c10d()  # --ddp-backend c10d / pytorch_ddp on CPU workers (fairseq 0.12 passes GPU device ids)
