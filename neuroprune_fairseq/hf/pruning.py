"""NeuroPrune on HuggingFace models: penalties, per-epoch redundancy pruning with physical
head removal, honest sparsity. Family-agnostic: the role tables (``roles.py``) say where a
family's sites are (and, for T5, what else a head-count change needs: ``t5.py``); the policy
and the math are :mod:`neuroprune_fairseq.core`.

Head surgery is ours (transformers 5.x removed ``prune_heads``, ``config.pruned_heads`` and
``head_mask``): the core slices q/k/v rows and out columns (keeping Parameter identity and
slicing optimizer state), then the site updates every attribute the HF attention module
reads for its head count and inner width. Each attention module remembers the original
indices of its kept heads in ``module._np_kept_heads`` and its dense head count in
``module._np_dense_heads``; :func:`pruning_record` collects them for saving.
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..core import policy
from ..core.facade import PrunableModel
from ..core.policy import PENALTIES, HeadPruneResult
from ..core.sparsity import SparsityReport
from .roles import ATTN_KINDS, MLP_KINDS, HfAttentionSite, MlpSite, attention_sites, mlp_sites

logger = logging.getLogger(__name__)

__all__ = ["PENALTIES", "HeadPruneResult", "HfModel", "neuroprune_penalties", "prune_attention_heads_", "prune_heads",
           "unwrap_optimizer", "prune_redundant_heads_", "matrices", "dense_matrix_count", "model_sparsity",
           "head_counts", "heads_summary", "head_distances"]


def neuroprune_penalties(
    model: nn.Module,
    eps: float = 1e-4,
    penalty: str = "neuroprune",
    attn_kinds: Sequence[str] = ATTN_KINDS,
    mlp_kinds: Sequence[str] = MLP_KINDS,
    sites: Optional[Tuple[List[HfAttentionSite], List[MlpSite]]] = None,
) -> Tuple[Tensor, Tensor]:
    """``(sum_l R_attn, sum_l R_mlp)`` over the model's attention modules and MLP blocks
    (:func:`neuroprune_fairseq.core.policy.penalties`; a gated T5 MLP counts ``wi_0`` and
    ``wi_1`` as fc1 halves). The caller multiplies by alpha and beta. ``sites`` caches
    :func:`attention_sites` / :func:`mlp_sites` (they stay valid through pruning: Linear
    modules are kept)."""
    attn, mlp = sites if sites is not None else (attention_sites(model, attn_kinds), mlp_sites(model, mlp_kinds))
    zero = next(model.parameters()).new_zeros((), dtype=torch.float32)
    return policy.penalties(attn, mlp, eps, penalty, zero)


def prune_attention_heads_(
    site: HfAttentionSite, keep: Sequence[int], optimizer: Optional[torch.optim.Optimizer] = None
) -> None:
    """Keep only the heads ``keep`` (current indices) of one attention module; no merge."""
    policy.prune_site_heads_(site, keep, optimizer)


def prune_heads(model: nn.Module, heads: Dict[str, Sequence[int]], optimizer=None) -> None:
    """``{attention module name: heads to keep (current indices)}``: remove the others, no
    merge. A replacement for the ``model.prune_heads`` that transformers 5.x removed."""
    sites = {s.name: s for s in attention_sites(model)}
    unknown = set(heads) - set(sites)
    if unknown:
        raise KeyError(f"not attention modules of this model: {sorted(unknown)}")
    for name, keep in heads.items():
        policy.prune_site_heads_(sites[name], keep, optimizer)


class HfModel(PrunableModel):
    """:class:`neuroprune_fairseq.core.facade.PrunableModel` for a HuggingFace model: its sites
    are where its family's role table (:mod:`.roles`) says; its torch optimizer is found under
    accelerate's ``AcceleratedOptimizer`` (or similar wrappers), and the surgery slices that."""

    find_attention_sites = staticmethod(attention_sites)
    find_mlp_sites = staticmethod(mlp_sites)

    @staticmethod
    def torch_optimizer(optimizer) -> Optional[torch.optim.Optimizer]:
        """The torch optimizer under accelerate's ``AcceleratedOptimizer`` (or similar wrappers)."""
        seen = 0
        while optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer) and seen < 5:
            optimizer = getattr(optimizer, "optimizer", None)
            seen += 1
        return optimizer


unwrap_optimizer = HfModel.torch_optimizer  # the earlier public name (in __all__), kept


def prune_redundant_heads_(
    model: nn.Module,
    theta: float,
    method: str = "heuristic",
    optimizer: Optional[torch.optim.Optimizer] = None,
    kinds: Sequence[str] = ATTN_KINDS,
) -> List[HeadPruneResult]:
    """ELIM_REDUNDANT (Algorithm 2) on every attention module of the given kinds
    (:func:`neuroprune_fairseq.core.policy.prune_sites_`). Pass the training
    optimizer (or accelerate's wrapper of it) so its state is sliced with the weights."""
    return HfModel(model).prune_redundant_heads_(theta, method, optimizer, kinds)


# --------------------------------------------------------------------------- reporting
def matrices(model: nn.Module) -> List[Tensor]:
    """The attention (q, k, v, out) and MLP (fc1[, fc1 gate], fc2) weight matrices."""
    return HfModel(model).matrices()


def dense_matrix_count(model: nn.Module) -> int:
    """How many weights those matrices held before any head was removed."""
    return HfModel(model).dense_matrix_count()


def model_sparsity(model: nn.Module) -> SparsityReport:
    """Share of the attention + MLP matrices that is exactly zero or removed (``.sparsity`` %)."""
    return HfModel(model).sparsity()


def head_counts(model: nn.Module) -> List[int]:
    """Heads present in every attention module, in model order."""
    return HfModel(model).head_counts()


def heads_summary(model: nn.Module) -> Tuple[int, int]:
    """``(heads kept, dense heads)`` over all attention modules."""
    return HfModel(model).heads_summary()


def head_distances(model: nn.Module) -> Dict[str, float]:
    """Smallest off-diagonal l_inf [Q,K,V] head distance per attention module (what theta
    must exceed for anything to be pruned)."""
    return HfModel(model).min_head_distances()
