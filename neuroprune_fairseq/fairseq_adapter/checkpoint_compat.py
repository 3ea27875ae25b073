"""Let stock fairseq 0.12 tools load checkpoints under torch >= 2.6.

torch 2.6 made ``torch.load(weights_only=True)`` the default, and fairseq 0.12 calls
``torch.load`` without the argument; its checkpoints hold an ``argparse.Namespace``
(and, depending on the fairseq version that wrote them, omegaconf containers and numpy
scalars), so ``fairseq-generate`` fails on every checkpoint. Rather than turning the
safe loader off, we allow-list exactly these plain data types with
``torch.serialization.add_safe_globals``, when fairseq loads this plugin (``--user-dir``).
No environment variable is needed.
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
    return types


def allow_fairseq_checkpoints() -> None:
    if hasattr(torch.serialization, "add_safe_globals"):
        torch.serialization.add_safe_globals(_safe_types())


allow_fairseq_checkpoints()
