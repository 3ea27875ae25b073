"""NeuroPrune on HuggingFace modules: penalties, per-epoch redundancy pruning with
physical head removal, honest sparsity. Only the role tables (``roles.py``) are
family-specific; the math is :mod:`neuroprune_fairseq.core`.

Head surgery is ours (transformers 5.x removed ``prune_heads``, ``config.pruned_heads`` and
``head_mask``): the core slices q/k/v rows and out columns (keeping Parameter identity and
slicing optimizer state), then :func:`set_head_count_` updates every attribute the HF
attention module reads for its head count and inner width. Each attention module remembers
the original indices of its kept heads in ``module._np_kept_heads`` and its dense head
count in ``module._np_dense_heads``; :func:`pruning_record` collects them for saving.
"""
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core import (
    attention_group_penalty,
    elim_redundant_,
    l1_penalty,
    mlp_preferential_attachment_penalty,
    prune_heads_,
    sparsity_report,
)
from ..core.penalties import preferential_attachment_l1
from ..core.redundancy import RedundancyPlan
from ..core.sparsity import SparsityReport
from .roles import ATTN_KINDS, MLP_KINDS, AttentionSite, MlpSite, attention_sites, mlp_sites

logger = logging.getLogger(__name__)

PENALTIES = ("neuroprune", "l1", "none")


# --------------------------------------------------------------------------- penalties
def neuroprune_penalties(
    model: nn.Module,
    eps: float = 1e-4,
    penalty: str = "neuroprune",
    attn_kinds: Sequence[str] = ATTN_KINDS,
    mlp_kinds: Sequence[str] = MLP_KINDS,
    sites: Optional[Tuple[List[AttentionSite], List[MlpSite]]] = None,
) -> Tuple[Tensor, Tensor]:
    """``(sum_l R_attn, sum_l R_mlp)`` over the model's attention modules and MLP blocks.

    ``penalty="neuroprune"``: Eq. 2 per attention module and Eq. 1 per MLP block (a gated
    T5 MLP counts both ``wi_0`` and ``wi_1`` as fc1 halves: ``PA(wi_0) + PA(wi_1) + PA(wo)``).
    ``penalty="l1"``: the paper's baseline, plain L1 of all q, k, v weights (first value)
    and of all fc1, fc2 weights (second value), as the fairseq ``l1_ce`` criterion.
    The caller multiplies by alpha and beta. ``sites`` caches :func:`attention_sites` /
    :func:`mlp_sites` (they stay valid through pruning: Linear modules are kept).
    """
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    attn, mlp = sites if sites is not None else (attention_sites(model, attn_kinds), mlp_sites(model, mlp_kinds))
    ref = next(model.parameters())
    zero = ref.new_zeros((), dtype=torch.float32)
    if penalty == "none":
        return zero, zero
    if penalty == "l1":
        r_attn = l1_penalty(w for s in attn for w in (s.q.weight, s.k.weight, s.v.weight)) if attn else zero
        r_mlp = l1_penalty(w for s in mlp for w in (*[f.weight for f in s.fc1], s.fc2.weight)) if mlp else zero
        return r_attn, r_mlp
    r_attn = sum((attention_group_penalty(s.q.weight, s.k.weight, s.v.weight) for s in attn), zero)
    r_mlp = zero
    for s in mlp:
        r_mlp = r_mlp + mlp_preferential_attachment_penalty(s.fc1[0].weight, s.fc2.weight, eps)
        for extra in s.fc1[1:]:
            r_mlp = r_mlp + preferential_attachment_l1(extra.weight, eps)
    return r_attn, r_mlp


# --------------------------------------------------------------------------- surgery
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
            if position_bias is not None:
                full = position_bias
                if full.shape[1] == self._np_dense_heads:
                    position_bias = full.index_select(1, self._np_index(full.device))
                out = super().forward(hidden_states, mask=mask, key_value_states=key_value_states,
                                      position_bias=position_bias, past_key_values=past_key_values, **kwargs)
                return (out[0], full, *out[2:])
            self._np_full_bias = None
            out = super().forward(hidden_states, mask=mask, key_value_states=key_value_states,
                                  position_bias=None, past_key_values=past_key_values, **kwargs)
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


def mark_dense_(site: AttentionSite) -> None:
    """Remember the module's dense head count and head indices (before any surgery)."""
    m = site.module
    if not hasattr(m, "_np_dense_heads"):
        m._np_dense_heads = site.num_heads
        m._np_kept_heads = list(range(site.num_heads))


def set_head_count_(site: AttentionSite, kept_original: Sequence[int]) -> None:
    """Make the HF attention module consistent with q/k/v now holding ``kept_original``
    (original head indices, sorted): every head-count / inner-width attribute of the
    family table, 4.x ``pruned_heads`` bookkeeping, and the T5 relative bias."""
    m = site.module
    if not hasattr(m, "_np_dense_heads"):
        raise RuntimeError(f"{site.name}: call mark_dense_(site) before the surgery")
    dense = m._np_dense_heads
    n = len(kept_original)
    hd = site.head_dim
    holder = site.holder
    for attr in site.roles.heads_attrs:
        setattr(holder, attr, n)
    for attr in site.roles.inner_attrs:
        setattr(holder, attr, n * hd)
    m._np_kept_heads = list(kept_original)
    removed = set(range(dense)) - set(kept_original)
    if site.roles.pruned_heads_owner is not None:
        owner = site.module if not site.roles.pruned_heads_owner else getattr(site.module, site.roles.pruned_heads_owner)
        if hasattr(owner, "pruned_heads"):  # transformers 4.x keeps this set for its own prune_heads
            owner.pruned_heads = set(removed)
    if site.roles.holder == "" and hasattr(m, "relative_attention_num_buckets"):  # T5
        if hasattr(m, "pruned_heads"):
            # transformers 4.x T5Attention slices the dense position bias by ``pruned_heads``
            m.pruned_heads = set(removed)
            if n != dense and not type(m).__name__.startswith("NeuroPrune"):
                m.__class__ = _t5_4x_class(type(m))
        elif n != dense and not type(m).__name__.startswith("NeuroPrune"):
            m.__class__ = _t5_bias_class(type(m))


def prune_attention_heads_(
    site: AttentionSite, keep: Sequence[int], optimizer: Optional[torch.optim.Optimizer] = None
) -> None:
    """Keep only the heads ``keep`` (current indices) of one attention module; no merge."""
    keep = sorted(set(int(h) for h in keep))
    current = site.kept_heads
    if keep == list(range(site.num_heads)):
        return
    mark_dense_(site)
    prune_heads_(site.q, site.k, site.v, site.out, site.head_dim, keep, optimizer)
    set_head_count_(site, [current[h] for h in keep])


def prune_heads(model: nn.Module, heads: Dict[str, Sequence[int]], optimizer=None) -> None:
    """``{attention module name: heads to keep (current indices)}``: remove the others, no
    merge. A replacement for the ``model.prune_heads`` that transformers 5.x removed."""
    sites = {s.name: s for s in attention_sites(model)}
    unknown = set(heads) - set(sites)
    if unknown:
        raise KeyError(f"not attention modules of this model: {sorted(unknown)}")
    for name, keep in heads.items():
        prune_attention_heads_(sites[name], keep, optimizer)


def unwrap_optimizer(optimizer):
    """The torch optimizer under accelerate's ``AcceleratedOptimizer`` (or similar wrappers)."""
    seen = 0
    while optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer) and seen < 5:
        optimizer = getattr(optimizer, "optimizer", None)
        seen += 1
    return optimizer


@dataclass
class HeadPruneResult:
    name: str
    kind: str
    plan: RedundancyPlan
    kept_original: List[int]  # original indices of the heads kept after this pass

    def line(self) -> str:
        p = self.plan
        merged = ",".join(f"{i}->{p.rep[i]}" for i in p.removed) or "-"
        return (f"{self.name} [{self.kind}]: heads {p.num_heads}->{len(p.keep)} min_dist={p.min_distance:.4f} "
                f"theta={p.theta:g} merged={merged}")


def prune_redundant_heads_(
    model: nn.Module,
    theta: float,
    method: str = "heuristic",
    optimizer: Optional[torch.optim.Optimizer] = None,
    kinds: Sequence[str] = ATTN_KINDS,
) -> List[HeadPruneResult]:
    """ELIM_REDUNDANT (Algorithm 2) on every attention module: heads whose [Q,K,V] blocks
    are within l_inf ``theta`` are merged into a dominating set (removed head's out columns
    added to its representative's) and physically removed. Pass the training optimizer so
    its state is sliced with the weights. Returns one result per module, with the smallest
    head distance (so a pass that prunes nothing says why)."""
    optimizer = unwrap_optimizer(optimizer)
    results = []
    for site in attention_sites(model, kinds):
        mark_dense_(site)
        before = site.kept_heads
        n = site.num_heads
        plan = elim_redundant_(site.q, site.k, site.v, site.out, n, theta, method, optimizer)
        if plan.removed:
            set_head_count_(site, [before[h] for h in plan.keep])
        results.append(HeadPruneResult(site.name, site.kind, plan, site.kept_heads))
    return results


# --------------------------------------------------------------------------- reporting
def matrices(model: nn.Module) -> List[Tensor]:
    """The attention (q, k, v, out) and MLP (fc1[, fc1 gate], fc2) weight matrices."""
    ws = []
    for s in attention_sites(model):
        ws.extend([s.q.weight, s.k.weight, s.v.weight, s.out.weight])
    for s in mlp_sites(model):
        ws.extend([f.weight for f in s.fc1] + [s.fc2.weight])
    return ws


def dense_matrix_count(model: nn.Module) -> int:
    """How many weights those matrices held before any head was removed."""
    total = 0
    for s in attention_sites(model):
        d_attn = s.dense_heads * s.head_dim
        total += d_attn * (s.q.in_features + s.k.in_features + s.v.in_features) + s.out.out_features * d_attn
    for s in mlp_sites(model):
        total += sum(f.weight.numel() for f in s.fc1) + s.fc2.weight.numel()
    return total


def model_sparsity(model: nn.Module) -> SparsityReport:
    """Share of the attention + MLP matrices that is exactly zero or removed (``.sparsity`` %)."""
    return sparsity_report(matrices(model), dense_matrix_count(model))


def head_counts(model: nn.Module) -> Dict[str, int]:
    return {s.name: s.num_heads for s in attention_sites(model)}


def heads_summary(model: nn.Module) -> Tuple[int, int]:
    """``(heads kept, dense heads)`` over all attention modules."""
    sites = attention_sites(model)
    return sum(s.num_heads for s in sites), sum(s.dense_heads for s in sites)


def head_distances(model: nn.Module) -> Dict[str, float]:
    """Smallest off-diagonal l_inf [Q,K,V] head distance per attention module (what theta
    must exceed for anything to be pruned)."""
    from ..core import head_distance_matrix

    out = {}
    for s in attention_sites(model):
        n = s.num_heads
        if n < 2:
            out[s.name] = float("inf")
            continue
        d = head_distance_matrix(s.q.weight, s.k.weight, s.v.weight, n)
        d.fill_diagonal_(float("inf"))
        out[s.name] = float(d.min())
    return out
