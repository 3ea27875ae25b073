"""Modules of the remote code for a NeuroPrune-pruned HuggingFace model (see
``modeling_neuroprune.py``, which imports this sibling file; ``save_pruned`` writes both next to
the weights): the structured Linear layer (gathers / scatters), Linear resizing, head removal of
a dense-built attention module, and the T5 relative-bias subclasses. torch only.
"""
# Duplicated on purpose: the remote code must run without neuroprune_fairseq installed, so it
# cannot import its twins: StructuredLinear / _as_structured_like_ ~ core/structured_linear.py,
# _resize_linear_ ~ core/surgery.py (resize_linear_), _get ~ hf/roles.py. Change both sides
# together; tests/test_hf_remote_code.py compares them. The T5 attention subclasses have one
# home, here: the package's T5 hook (hf/t5.py) imports them.
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IN_INDEX, IN_FULL, OUT_INDEX, OUT_BIAS = "np_in_index", "np_in_full", "np_out_index", "np_out_bias"
BUFFERS = (IN_INDEX, IN_FULL, OUT_INDEX, OUT_BIAS)


# --------------------------------------------------------------------------- structure
class StructuredLinear(nn.Linear):
    """``nn.Linear`` over the live inputs ``np_in_index`` of a ``np_in_full``-wide input,
    writing its live outputs ``np_out_index`` (the others are the constants ``np_out_bias``)."""

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

    def extra_repr(self) -> str:
        n = getattr(self, IN_FULL, None)
        b = getattr(self, OUT_BIAS, None)
        full_in = int(n) if n is not None else self.in_features
        full_out = int(b.numel()) if b is not None else self.out_features
        return f"{super().extra_repr()}, full_in={full_in}, full_out={full_out}"


def _as_structured_like_(linear: nn.Linear, state: Dict[str, Tensor], prefix: str) -> None:
    values = {n: state.get(prefix + n) for n in BUFFERS}
    if all(v is None for v in values.values()):
        return
    if not isinstance(linear, StructuredLinear):
        linear.__class__ = StructuredLinear
    for name, value in values.items():
        if name not in linear._buffers:
            linear.register_buffer(name, None)
        if value is not None:
            setattr(linear, name, torch.empty_like(value, device=linear.weight.device))


def _resize_linear_(linear: nn.Linear, out_features: int, in_features: int) -> None:
    if tuple(linear.weight.shape) == (out_features, in_features):
        return
    w = linear.weight
    linear.weight = nn.Parameter(w.new_empty(out_features, in_features), requires_grad=w.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.new_empty(out_features), requires_grad=linear.bias.requires_grad)
    linear.out_features, linear.in_features = out_features, in_features


def _get(module: nn.Module, path: str) -> Optional[nn.Module]:
    if not path:
        return module
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def _prune_heads_(module: nn.Module, info: dict) -> None:
    """Make a dense-built attention module hold the heads ``info['kept_heads']`` (original
    indices): the family's head-count attributes and the T5 bias hook. The q/k/v/out shapes
    come with the recorded Linear shapes, the values with the weights."""
    roles, kept, hd = info["roles"], list(info["kept_heads"]), int(info["head_dim"])
    module._np_dense_heads = int(info["dense_heads"])
    module._np_kept_heads = kept
    if kept == list(range(module._np_dense_heads)):
        return
    holder = _get(module, roles["holder"])
    for attr in roles["heads_attrs"]:
        setattr(holder, attr, len(kept))
    for attr in roles["inner_attrs"]:
        setattr(holder, attr, len(kept) * hd)
    owner_path = roles.get("pruned_heads_owner")
    if owner_path is not None:
        owner = _get(module, owner_path)
        if hasattr(owner, "pruned_heads"):  # transformers 4.x bookkeeping
            owner.pruned_heads = set(range(module._np_dense_heads)) - set(kept)
    if roles.get("post_prune") == "t5":
        _t5_after_head_change(module, kept)


# --------------------------------------------------------------------------- T5
# T5 computes the relative position bias once (first block), for the dense head count, and
# passes it on; a pruned module takes its kept heads' columns and passes the dense bias on.
# The package's T5 hook (hf/t5.py) calls _t5_after_head_change: one code path for both.
_T5_CLASSES: Dict[object, type] = {}


def _t5_after_head_change(m: nn.Module, kept: List[int]) -> None:
    """``m`` now holds the heads ``kept`` of its ``_np_dense_heads``: keep 4.x's ``pruned_heads`` up
    to date and give a pruned module its subclass (once: a module swapped before keeps its class)."""
    dense = m._np_dense_heads
    swap = len(kept) != dense and type(m) not in _T5_CLASSES.values()
    if hasattr(m, "pruned_heads"):  # transformers 4.x slices the dense bias by pruned_heads
        m.pruned_heads = set(range(dense)) - set(kept)
        if swap:
            m.__class__ = _t5_4x_class(type(m))
    elif swap:
        m.__class__ = _t5_bias_class(type(m))


def _t5_bias_class(base: type) -> type:
    """A subclass of a (5.x) ``T5Attention`` whose heads are a subset of the dense ones.

    T5 computes the relative position bias once (first block) for the dense head count
    and passes it to every later block. A pruned module receives that dense bias, uses the
    columns of its kept heads, and passes the dense bias on unchanged. Its own
    ``relative_attention_bias`` embedding (first block only) stays dense for that reason.
    """
    cached = _T5_CLASSES.get(base)
    if cached is not None:
        return cached

    class NeuroPruneT5Attention(base):
        def _np_index(self, device):
            return torch.tensor(self._np_kept_heads, dtype=torch.long, device=device)

        def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
            full = super().compute_bias(query_length, key_length, device=device, past_seen_tokens=past_seen_tokens)
            self._np_full_bias = full
            return full.index_select(1, self._np_index(full.device))

        def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None,
                    past_key_values=None, **kwargs):
            if past_key_values is not None:  # 5.x passes ``cache``; both at once warns
                kwargs["past_key_values"] = past_key_values
            if position_bias is not None:
                full = position_bias
                if full.shape[1] == self._np_dense_heads:
                    position_bias = full.index_select(1, self._np_index(full.device))
                out = super().forward(hidden_states, mask=mask, key_value_states=key_value_states,
                                      position_bias=position_bias, **kwargs)
                return (out[0], full, *out[2:])
            self._np_full_bias = None
            out = super().forward(hidden_states, mask=mask, key_value_states=key_value_states,
                                  position_bias=None, **kwargs)
            full = self._np_full_bias
            self._np_full_bias = None
            if full is None:  # no relative bias here: T5 uses zeros of the dense head count
                pb = out[1]
                full = pb.new_zeros((pb.shape[0], self._np_dense_heads, *pb.shape[2:]))
                full.requires_grad_(pb.requires_grad)
            return (out[0], full, *out[2:])

    NeuroPruneT5Attention.__name__ = NeuroPruneT5Attention.__qualname__ = f"NeuroPrune{base.__name__}"
    _T5_CLASSES[base] = NeuroPruneT5Attention
    return NeuroPruneT5Attention


def _t5_4x_class(base: type) -> type:
    """transformers 4.x ``T5Attention`` slices the dense position bias with ``pruned_heads``,
    but a module without its own relative bias that receives none (the first cross-attention
    of a stack) builds zeros of its *pruned* head count and then slices those by the dense
    indices (IndexError). This subclass builds that bias without the slicing and hands the
    next layers a dense-head bias (every head's bias is the same zeros + mask there)."""
    cached = _T5_CLASSES.get(("4.x", base))
    if cached is not None:
        return cached

    class NeuroPruneT5Attention4x(base):
        def forward(self, hidden_states, mask=None, key_value_states=None, position_bias=None, *args, **kwargs):
            if position_bias is not None or self.has_relative_attention_bias or not self.pruned_heads:
                return super().forward(hidden_states, mask, key_value_states, position_bias, *args, **kwargs)
            pruned, self.pruned_heads = self.pruned_heads, set()
            try:
                out = super().forward(hidden_states, mask, key_value_states, None, *args, **kwargs)
            finally:
                self.pruned_heads = pruned
            pb = out[1]
            full = pb[:, :1].expand(pb.shape[0], self._np_dense_heads, *pb.shape[2:])
            return (out[0], full, *out[2:])

    NeuroPruneT5Attention4x.__name__ = NeuroPruneT5Attention4x.__qualname__ = f"NeuroPrune{base.__name__}"
    _T5_CLASSES[("4.x", base)] = NeuroPruneT5Attention4x
    return NeuroPruneT5Attention4x
