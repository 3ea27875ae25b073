"""The one model facade both adapters implement (torch only), in the style of Torch-Pruning's
one vocabulary over many models.

An adapter subclasses :class:`PrunableModel` and says only *where its sites are*
(:attr:`~PrunableModel.find_attention_sites`, :attr:`~PrunableModel.find_mlp_sites`) and *how its
optimizer is reached* (:meth:`~PrunableModel.torch_optimizer` for the per-weight step and the
learning rate, :meth:`~PrunableModel.surgery_optimizer` for what the surgery slices), plus an
optional :meth:`~PrunableModel.after_head_surgery_` hook. Everything else is written here,
once, on top of :mod:`.policy` (which acts on sites) and :mod:`.head_target`:

=========================================  ==============================================
``head_counts(kinds)``                     ``List[int]``, heads per attention module
``heads_summary()``                        ``(heads kept, dense heads)``
``min_head_distances()``                   ``{module name: smallest head distance}``
``prune_redundant_heads_(theta, ...)``     ``List[HeadPruneResult]`` (Algorithm 2)
``prune_to_target_(target, ...)``          ``(List[HeadPruneResult], TargetPlan)``
``check_head_budget(total, per_module)``   raises if the model cannot meet the budget
``matrices()``                             ``List[Tensor]``, attention + MLP weights
``dense_matrix_count()``                   ``int``, their weights in the dense model
``sparsity()``                             :class:`.sparsity.SparsityReport`
``sparsify_roles(...)``                    :class:`.target.SparsifyRoles`
``pad_to_dense_()``                        ``{"attention_modules": n, ...}``
=========================================  ==============================================

The adapters' module-level functions of the same names (``head_counts(model)``,
``prune_redundant_heads_(model, ...)``, ``matrices(model)``, ``dense_matrix_count(model)``,
``model_sparsity(model)``) are these methods on the adapter's facade; the functions of
:mod:`.policy` that act on site lists carry other names (``site_head_counts``, ``prune_sites_``,
``site_matrices``, ``site_dense_count``, ``site_sparsity``).
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from . import policy
from .head_target import TargetPlan, check_budget, prune_sites_to_target_
from .sites import ATTN_KINDS, MLP_KINDS, AttentionSite, MlpSite
from .sparsity import SparsityReport


class PrunableModel:
    """A model as NeuroPrune sees it: its attention sites and MLP sites, and its optimizer."""

    def __init__(self, model: nn.Module):
        self.model = model

    # ------------------------------------------------------------ what an adapter says
    #: ``find_attention_sites(model, kinds)`` / ``find_mlp_sites(model, kinds)``: the adapter's
    #: functions that find a model's sites (set as ``staticmethod``\ s on the subclass)
    find_attention_sites: Callable[[nn.Module, Sequence[str]], List[AttentionSite]]
    find_mlp_sites: Callable[[nn.Module, Sequence[str]], List[MlpSite]]

    def attention_sites(self, kinds: Sequence[str] = ATTN_KINDS) -> List[AttentionSite]:
        """Every attention module of the model whose kind is in ``kinds``, in model order."""
        return self.find_attention_sites(self.model, kinds)

    def mlp_sites(self, kinds: Sequence[str] = MLP_KINDS) -> List[MlpSite]:
        """Every MLP block of the model whose kind is in ``kinds``, in model order."""
        return self.find_mlp_sites(self.model, kinds)

    @staticmethod
    def torch_optimizer(optimizer) -> Optional[torch.optim.Optimizer]:
        """The ``torch.optim.Optimizer`` inside the training loop's optimizer (its learning rate
        and second moments), or None."""
        return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None

    @classmethod
    def surgery_optimizer(cls, optimizer):
        """What the surgery slices with the weights (``state[param]``), from the optimizer the
        caller passes: by default the torch optimizer inside it."""
        return cls.torch_optimizer(optimizer)

    def after_head_surgery_(self) -> None:
        """Anything the model needs after heads were removed (default: nothing)."""

    # ------------------------------------------------------------ heads
    def head_counts(self, kinds: Sequence[str] = ATTN_KINDS) -> List[int]:
        """Heads present in every attention module, in model order."""
        return policy.site_head_counts(self.attention_sites(kinds))

    def heads_summary(self) -> Tuple[int, int]:
        """``(heads kept, dense heads)`` over all attention modules."""
        sites = self.attention_sites()
        return sum(s.num_heads for s in sites), sum(s.dense_heads for s in sites)

    def min_head_distances(self) -> Dict[str, float]:
        """Smallest off-diagonal l_inf [Q,K,V] head distance per attention module (what theta
        must exceed for anything to be pruned)."""
        return policy.min_head_distances(self.attention_sites())

    def prune_redundant_heads_(self, theta: float, method: str = "heuristic", optimizer=None,
                               kinds: Sequence[str] = ATTN_KINDS) -> List[policy.HeadPruneResult]:
        """ELIM_REDUNDANT (Algorithm 2) on every attention module of ``kinds``
        (:func:`.policy.prune_sites_`), the optimizer's state sliced with the weights."""
        results = policy.prune_sites_(self.attention_sites(kinds), theta, method, self.surgery_optimizer(optimizer))
        self.after_head_surgery_()
        return results

    def prune_to_target_(self, target: Union[int, Sequence[int]], method: str = "heuristic", per_module: bool = False,
                         optimizer=None, kinds: Sequence[str] = ATTN_KINDS
                         ) -> Tuple[List[policy.HeadPruneResult], TargetPlan]:
        """One pruning epoch under a head budget (:func:`.head_target.prune_sites_to_target_`):
        ``target`` is this epoch's scheduled count (a total, or per module)."""
        out = prune_sites_to_target_(self.attention_sites(kinds), target, method, per_module,
                                     self.surgery_optimizer(optimizer))
        self.after_head_surgery_()
        return out

    def check_head_budget(self, total: int, per_module: int, kinds: Sequence[str] = ATTN_KINDS) -> None:
        """Refuse a head budget the model cannot meet (:func:`.head_target.check_budget`)."""
        check_budget(self.head_counts(kinds), int(total or 0), int(per_module or 0))

    # ------------------------------------------------------------ weights
    def matrices(self) -> List[Tensor]:
        """The attention (q, k, v, out) and MLP (fc1[, fc1 gate], fc2) weight matrices."""
        return policy.site_matrices(self.attention_sites(), self.mlp_sites())

    def dense_matrix_count(self) -> int:
        """How many weights those matrices held in the dense model."""
        return policy.site_dense_count(self.attention_sites(), self.mlp_sites())

    def sparsity(self) -> SparsityReport:
        """Share of the attention + MLP matrices that is exactly zero or removed (``.sparsity`` %)."""
        return policy.site_sparsity(self.attention_sites(), self.mlp_sites())

    def sparsify_roles(self, attn_kinds: Sequence[str], mlp_kinds: Sequence[str], penalty: str, eps: float):
        """What the proximal step and the target act on (:func:`.policy.sparsify_roles`): the
        penalised kinds' weights, every site's matrices for the count."""
        attn_all, mlp_all = self.attention_sites(), self.mlp_sites()
        return policy.sparsify_roles([s for s in attn_all if s.kind in attn_kinds],
                                     [s for s in mlp_all if s.kind in mlp_kinds], attn_all, mlp_all, penalty, eps)

    def pad_to_dense_(self) -> Dict[str, int]:
        """:func:`.policy.pad_sites_to_dense_` on every attention module and MLP block."""
        return policy.pad_sites_to_dense_(self.attention_sites(), self.mlp_sites())
