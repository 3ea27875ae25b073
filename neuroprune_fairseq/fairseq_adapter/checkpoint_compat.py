"""Let stock fairseq 0.12 tools load checkpoints under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and fairseq 0.12 calls
``torch.load`` without the argument; its checkpoints hold an ``argparse.Namespace``
(and, depending on the fairseq version that wrote them, omegaconf containers and numpy
scalars), so ``fairseq-generate`` fails on every checkpoint. Rather than turning the
safe loader off, we allow-list exactly these plain data types with
``torch.serialization.add_safe_globals``, when fairseq loads this plugin (``--user-dir``).
No environment variable is needed. With several workers, rank 0 loads the checkpoint and sends it
to the others through ``torch.save`` / ``torch.load`` with fairseq's ``_TensorPlaceholder`` in it:
allowed too, so data-parallel runs resume.

Also: checkpoints saved mid-epoch by version 0.1.0 of this plugin hold a custom ``TextMeter``
in their logged metrics, and fairseq rebuilds meters on resume by looking their class name up
in ``fairseq.logging.meters``. The plugin no longer logs a custom meter; for those older
checkpoints it adds a ``TextMeter`` under that name (only if fairseq has none), so they resume.
"""
import argparse
import collections
import typing

import torch


def _safe_types():
    types = [argparse.Namespace, collections.OrderedDict, collections.defaultdict, typing.Any, dict, list, int, float, str]
    try:
        import omegaconf
        from omegaconf import base, nodes

        types += [omegaconf.DictConfig, omegaconf.ListConfig, base.ContainerMetadata, base.Metadata]
        types += [getattr(nodes, n) for n in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode") if hasattr(nodes, n)]
    except ImportError:  # pragma: no cover - fairseq requires omegaconf
        pass
    try:
        import numpy as np

        types += [np.dtype, np.ndarray, type(np.dtype("float64")), type(np.dtype("float32")), type(np.dtype("int64"))]
        try:
            from numpy._core.multiarray import _reconstruct, scalar
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct, scalar
        types += [scalar, _reconstruct]
    except ImportError:  # pragma: no cover
        pass
    try:  # resuming with several workers: rank 0 loads the checkpoint and broadcasts it with torch.save /
        # torch.load, its tensors replaced by this placeholder (fairseq.distributed.utils.broadcast_object)
        from fairseq.distributed.utils import _TensorPlaceholder

        types.append(_TensorPlaceholder)
    except ImportError:  # pragma: no cover
        pass
    return types


def allow_fairseq_checkpoints() -> None:
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals(_safe_types())


def resume_legacy_meters() -> None:
    from fairseq.logging import meters

    from .criterion import per_module_text

    class TextMeter(meters.MetersDict._DerivedMeter):
        """Plugin 0.1.0's string meter, restored as the derived meter that replaced it (so the
        log shows live values, and the next checkpoint no longer holds it)."""

        def __init__(self):
            super().__init__(self._text)

        def _text(self, meters_dict) -> str:
            name = next((k for k, m in meters_dict.items() if m is self), "")
            return per_module_text(name)(meters_dict)

        def load_state_dict(self, state_dict):
            pass

    if not hasattr(meters, "TextMeter"):
        meters.TextMeter = TextMeter


allow_fairseq_checkpoints()
resume_legacy_meters()
