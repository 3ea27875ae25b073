"""A head budget on HuggingFace models (``NeuroPruneArguments(target_heads=K)``): the policy of
:mod:`neuroprune_fairseq.core.head_target` (schedule, bisection over theta, closest-first
completion) on the attention sites of :mod:`.roles`, through the model facade
(:meth:`neuroprune_fairseq.core.facade.PrunableModel.prune_to_target_`, Algorithm 2's merge and
the adapter's own head-count bookkeeping). The Trainer prunes after every epoch, so the pruning
epochs are 1, 2, ... and the budget is reached at ``target_epoch`` (default: the last epoch)."""
import math

from ..core.head_target import check_target_epoch

#: the Trainer prunes after every epoch from the first: the schedule's start and period
START, EVERY = 1, 1


def resolve_target_epoch(target_epoch: int, num_train_epochs: float) -> int:
    """``target_epoch`` (> 0) or the run's last epoch; refuses one after the run ends."""
    return check_target_epoch(int(target_epoch or 0), START, EVERY, int(math.ceil(num_train_epochs or 0)))
