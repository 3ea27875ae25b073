"""``--np-target-heads K`` / ``--np-target-heads-per-module k`` on fairseq models: the policy of
:mod:`neuroprune_fairseq.core.head_target` (schedule, bisection over theta, closest-first
completion) applied to every fairseq ``MultiheadAttention``, with Algorithm 2's merge and
physical removal. Used by the ``neuroprune_translation`` task at each pruning epoch."""
import logging
from typing import List, Optional, Sequence, Tuple  # noqa: F401

import torch
from torch import nn

from ..core.head_target import TargetPlan, check_budget, check_target_epoch, prune_sites_to_target_, scheduled_heads
from ..core.policy import HeadPruneResult
from .sites import attention_sites, disable_fused_paths_, head_counts

logger = logging.getLogger(__name__)

DEFAULT_THETA = 0.2  # --np-theta's default (task.py); any other value is reported as ignored


def target_enabled(cfg) -> bool:
    return bool(getattr(cfg, "np_target_heads", 0) or getattr(cfg, "np_target_heads_per_module", 0))


def check_target_setup(cfg, warn: bool = True) -> Optional[int]:
    """Validate the target options of the task config before any data is read; returns the
    epoch by which the budget is reached (None: no target)."""
    total, per = int(getattr(cfg, "np_target_heads", 0) or 0), int(getattr(cfg, "np_target_heads_per_module", 0) or 0)
    target_epoch = int(getattr(cfg, "np_target_epoch", 0) or 0)
    if total < 0 or per < 0 or target_epoch < 0:
        raise ValueError("--np-target-heads, --np-target-heads-per-module and --np-target-epoch must be >= 0 (0: off / default)")
    if not (total or per):
        if target_epoch:
            raise ValueError("--np-target-epoch needs --np-target-heads or --np-target-heads-per-module")
        return None
    if total and per:
        raise ValueError("give either --np-target-heads (a total) or --np-target-heads-per-module, not both")
    if cfg.np_no_head_pruning:
        raise ValueError("--np-target-heads prunes heads; drop --np-no-head-pruning (or drop the target)")
    epoch = check_target_epoch(target_epoch, cfg.np_prune_start_epoch, cfg.np_prune_every,
                               int(getattr(cfg, "max_epoch", 0) or 0))
    if warn and abs(float(cfg.np_theta) - DEFAULT_THETA) > 1e-12:
        logger.warning(f"--np-theta {cfg.np_theta:g} is not used: with a head target the task chooses theta at "
                       "each pruning epoch (logged)")
    return epoch


def check_model_budget(cfg, model: nn.Module) -> None:
    """Refuse a budget the model cannot meet (at least one head per module, at most the heads
    it has): at model build time (dense shapes) and when the first epoch starts (after a
    checkpoint, possibly pruned, was loaded)."""
    check_budget(head_counts(model), int(cfg.np_target_heads or 0), int(cfg.np_target_heads_per_module or 0))


def epoch_targets(cfg, counts: Sequence[int], epoch: int, target_epoch: int):
    """The scheduled count(s) for this pruning epoch: one total, or one per module."""
    sched = lambda cur, fin: scheduled_heads(cur, fin, epoch, cfg.np_prune_start_epoch, cfg.np_prune_every, target_epoch)  # noqa: E731
    if cfg.np_target_heads_per_module:
        return [sched(c, int(cfg.np_target_heads_per_module)) for c in counts]
    return sched(sum(counts), int(cfg.np_target_heads))


def prune_to_target_(
    model: nn.Module,
    cfg,
    epoch: int,
    target_epoch: int,
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> Tuple[List[HeadPruneResult], TargetPlan]:
    """One pruning epoch under a head target: plan (schedule, theta, closest-first) on the
    current weights, then merge + remove physically in every module (optimizer state sliced)."""
    sites = attention_sites(model)
    target = epoch_targets(cfg, [s.num_heads for s in sites], epoch, target_epoch)
    results, tp = prune_sites_to_target_(sites, target, cfg.np_dominating, bool(cfg.np_target_heads_per_module), optimizer)
    disable_fused_paths_(model)
    return results, tp
