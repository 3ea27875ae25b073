"""T5 specifics of head pruning, behind the T5 family's post-prune hook (``Family.post_prune``).

T5 computes the relative position bias once (first block of a stack), for the dense head
count, and passes it on to every later block; a head-pruned T5 attention module must select
its kept heads' columns of that bias and pass the dense bias on. transformers 4.x and 5.x do
this differently, so :func:`after_head_change` gives a pruned module a subclass of its own
class (built lazily, once per base class; nothing here imports transformers):

* 5.x (no ``pruned_heads``): :func:`_t5_bias_class`;
* 4.x (``pruned_heads`` set kept up to date): :func:`_t5_4x_class`.
"""
from typing import Dict, List

import torch


def after_head_change(site, kept_original: List[int]) -> None:
    """The T5 family's post-prune hook: ``site`` (an ``hf.roles.HfAttentionSite``) now holds the
    heads ``kept_original`` of its ``module._np_dense_heads``."""
    m = site.module
    dense, n = m._np_dense_heads, len(kept_original)
    swap = n != dense and type(m) not in _T5_CLASSES.values()  # a module swapped once keeps its class
    if hasattr(m, "pruned_heads"):
        # transformers 4.x T5Attention slices the dense position bias by ``pruned_heads``
        m.pruned_heads = set(range(dense)) - set(kept_original)
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


_T5_CLASSES: Dict[type, type] = {}


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
