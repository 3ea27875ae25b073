"""Structure the penalties zeroed, physically removed from an ``nn.Linear`` (torch only).

* an all-zero input column of a weight (e.g. an input group ``j`` of a module's [Q; K; V] that
  Eq. 2 zeroed, or an input of fc1 no neuron reads): the layer reads only its live inputs,
  one gather (``x.index_select(-1, in_index)``);
* an all-zero output row (e.g. a row of fc2 that Eq. 1 emptied, or a row of an out projection):
  the layer computes only its live outputs and scatters them into a vector holding the dead
  outputs' biases (constants), one scatter.

:func:`structure_linear_` turns a ``nn.Linear`` into a :class:`StructuredLinear` in place (its
class changes, its Parameters keep their identity, sliced like the rest of the surgery), with
the same outputs. The indices and the dead outputs' biases are persistent buffers, so the state
dict says the structure and :func:`as_structured_like_` rebuilds it before loading.
"""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .surgery import prune_linear_

IN_INDEX, IN_FULL, OUT_INDEX, OUT_BIAS = "np_in_index", "np_in_full", "np_out_index", "np_out_bias"
BUFFERS = (IN_INDEX, IN_FULL, OUT_INDEX, OUT_BIAS)


class StructuredLinear(nn.Linear):
    """``nn.Linear`` over the live inputs ``np_in_index`` of a ``full_in``-wide input, writing
    its live outputs ``np_out_index`` of ``full_out`` (the others are the constants
    ``np_out_bias``). Either index may be absent (all inputs / all outputs live)."""

    def forward(self, x: Tensor) -> Tensor:
        idx = getattr(self, IN_INDEX, None)
        if idx is not None:
            x = x.index_select(-1, idx)
        y = F.linear(x, self.weight, self.bias)
        out_idx = getattr(self, OUT_INDEX, None)
        if out_idx is None:
            return y
        base = getattr(self, OUT_BIAS).to(y.dtype).expand(*y.shape[:-1], -1)
        return base.index_copy(-1, out_idx, y)

    @property
    def full_in(self) -> int:
        n = getattr(self, IN_FULL, None)
        return int(n) if n is not None else self.in_features

    @property
    def full_out(self) -> int:
        b = getattr(self, OUT_BIAS, None)
        return int(b.numel()) if b is not None else self.out_features

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, full_in={self.full_in}, full_out={self.full_out}"


def _make_structured(linear: nn.Linear) -> StructuredLinear:
    if not isinstance(linear, StructuredLinear):
        linear.__class__ = StructuredLinear
        for name in BUFFERS:
            if name not in linear._buffers:
                linear.register_buffer(name, None)
    return linear


def structure_linear_(linear: nn.Linear, inputs: bool = True, outputs: bool = True,
                      optimizer: Optional[torch.optim.Optimizer] = None) -> Dict[str, int]:
    """Remove ``linear``'s all-zero input columns (``inputs``) and all-zero output rows
    (``outputs``) physically; the layer's outputs stay the same. Returns how many of each were
    removed. A layer keeps at least one input and one output."""
    w = linear.weight.detach()
    removed = {"inputs": 0, "outputs": 0}
    with torch.no_grad():
        if inputs:
            live = (w != 0).any(0)
            if not bool(live.all()):
                keep = live.nonzero().flatten()
                if keep.numel() == 0:
                    keep = torch.zeros(1, dtype=torch.long, device=w.device)
                old = getattr(linear, IN_INDEX, None)
                full_in = linear.in_features if old is None else int(getattr(linear, IN_FULL))
                _make_structured(linear)
                linear.np_in_full = torch.tensor(full_in, dtype=torch.long, device=w.device)
                prune_linear_(linear, 1, keep, optimizer)
                linear.np_in_index = keep if old is None else old.index_select(0, keep)
                removed["inputs"] = int(live.numel() - keep.numel())
        w = linear.weight.detach()
        if outputs:
            live = (w != 0).any(1)
            if not bool(live.all()):
                keep = live.nonzero().flatten()
                if keep.numel() == 0:
                    keep = torch.zeros(1, dtype=torch.long, device=w.device)
                _make_structured(linear)
                old = getattr(linear, OUT_INDEX, None)
                if old is None:
                    bias = linear.bias.detach().clone() if linear.bias is not None else w.new_zeros(w.shape[0])
                    linear.np_out_bias = bias
                    new_index = keep
                else:
                    new_index = old.index_select(0, keep)
                prune_linear_(linear, 0, keep, optimizer)
                linear.np_out_index = new_index
                removed["outputs"] = int(live.numel() - keep.numel())
    return removed


def as_structured_like_(linear: nn.Linear, state_dict: Dict[str, Tensor], prefix: str) -> bool:
    """Before loading ``state_dict``: give ``linear`` the structure buffers the state dict holds
    under ``prefix`` (``'encoder.layers.0.fc1.'``), with their shapes. Returns whether it did."""
    keys = {n: state_dict.get(prefix + n) for n in BUFFERS}
    if all(v is None for v in keys.values()):
        return False
    _make_structured(linear)
    for name, value in keys.items():
        if value is not None:
            setattr(linear, name, torch.empty_like(value, device=linear.weight.device))
    return True


def full_in(linear: nn.Linear) -> int:
    """Input width of ``linear`` before any input was removed."""
    return linear.full_in if isinstance(linear, StructuredLinear) else linear.in_features


def full_out(linear: nn.Linear) -> int:
    """Output width of ``linear`` before any dead output row was removed."""
    return linear.full_out if isinstance(linear, StructuredLinear) else linear.out_features


def unstructure_linear_(linear: nn.Linear) -> bool:
    """The inverse of :func:`structure_linear_` with zeros: a plain ``nn.Linear`` of the full
    width again (zero columns for the removed inputs, zero rows with the recorded biases for the
    removed outputs). Same function, dense cost. Parameters keep their identity; not for use
    under a live optimizer. Returns whether ``linear`` was structured."""
    if not isinstance(linear, StructuredLinear):
        return False
    with torch.no_grad():
        w = linear.weight.data
        in_idx, out_idx = getattr(linear, IN_INDEX, None), getattr(linear, OUT_INDEX, None)
        if in_idx is not None:
            full = w.new_zeros(w.shape[0], linear.full_in)
            full[:, in_idx] = w
            w = full
        if out_idx is not None:
            full = w.new_zeros(linear.full_out, w.shape[1])
            full[out_idx] = w
            w = full
            if linear.bias is not None:
                bias = getattr(linear, OUT_BIAS).to(linear.bias.dtype).clone()
                bias[out_idx] = linear.bias.data
                linear.bias.data = bias
        linear.weight.data = w.contiguous()
    for name in BUFFERS:
        linear._buffers.pop(name, None)
    linear.__class__ = nn.Linear
    linear.out_features, linear.in_features = linear.weight.shape
    return True
