"""A head budget on HuggingFace models (``NeuroPruneArguments(target_heads=K)``): the policy of
:mod:`neuroprune_fairseq.core.head_target` (schedule, bisection over theta, closest-first
completion) on the attention sites of :mod:`.roles`, with Algorithm 2's merge and the
adapter's own head-count bookkeeping. The Trainer prunes after every epoch, so the pruning
epochs are 1, 2, ... and the budget is reached at ``target_epoch`` (default: the last epoch)."""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..core.head_target import TargetPlan, check_budget, check_target_epoch, prune_sites_to_target_, scheduled_heads
from ..core.policy import HeadPruneResult
from .pruning import unwrap_optimizer
from .roles import ATTN_KINDS, attention_sites


def resolve_target_epoch(target_epoch: int, num_train_epochs: float) -> int:
    """``target_epoch`` (> 0) or the run's last epoch; refuses one after the run ends."""
    import math

    return check_target_epoch(int(target_epoch or 0), 1, 1, int(math.ceil(num_train_epochs or 0)))


def check_model_budget(model: nn.Module, total: int, per_module: int, kinds: Sequence[str] = ATTN_KINDS) -> None:
    check_budget([s.num_heads for s in attention_sites(model, kinds)], int(total or 0), int(per_module or 0))


def prune_to_target_(
    model: nn.Module,
    total: int,
    per_module: int,
    epoch: int,
    target_epoch: int,
    method: str = "heuristic",
    optimizer: Optional[torch.optim.Optimizer] = None,
    kinds: Sequence[str] = ATTN_KINDS,
) -> Tuple[List[HeadPruneResult], TargetPlan]:
    """One pruning epoch under a head target on the attention modules of ``kinds``."""
    sites = attention_sites(model, kinds)
    counts = [s.num_heads for s in sites]
    if per_module:
        target = [scheduled_heads(c, int(per_module), epoch, 1, 1, target_epoch) for c in counts]
    else:
        target = scheduled_heads(sum(counts), int(total), epoch, 1, 1, target_epoch)
    return prune_sites_to_target_(sites, target, method, bool(per_module), unwrap_optimizer(optimizer))
