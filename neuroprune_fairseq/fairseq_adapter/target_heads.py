"""``--np-target-heads K`` / ``--np-target-heads-per-module k`` on fairseq models: the options'
checks and the run's warnings. The policy (schedule, bisection over theta, closest-first
completion, Algorithm 2's merge and physical removal) is :mod:`neuroprune_fairseq.core.head_target`,
applied by the ``neuroprune_translation`` task at each pruning epoch through the model facade
(:meth:`neuroprune_fairseq.core.facade.PrunableModel.prune_to_target_`)."""
import logging
import math
from typing import Optional, Sequence

from torch import nn

from ..core.head_target import check_one_budget, check_target_epoch
from .sites import head_counts

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
    check_one_budget(total, per)
    if cfg.np_no_head_pruning:
        raise ValueError("--np-target-heads prunes heads; drop --np-no-head-pruning (or drop the target)")
    epoch = check_target_epoch(target_epoch, cfg.np_prune_start_epoch, cfg.np_prune_every,
                               int(getattr(cfg, "max_epoch", 0) or 0))
    if warn and abs(float(cfg.np_theta) - DEFAULT_THETA) > 1e-12:
        logger.warning(f"--np-theta {cfg.np_theta:g} is not used: with a head target the task chooses theta at "
                       "each pruning epoch (logged)")
    return epoch


def _target_text(cfg) -> str:
    if cfg.np_target_heads_per_module:
        return f"--np-target-heads-per-module {int(cfg.np_target_heads_per_module)}"
    return f"--np-target-heads {int(cfg.np_target_heads)}"


def target_reached(cfg, counts: Sequence[int]) -> bool:
    if cfg.np_target_heads_per_module:
        return all(c <= int(cfg.np_target_heads_per_module) for c in counts)
    return sum(counts) <= int(cfg.np_target_heads)


def updates_until_target(train_itr, update_num: int, target_epoch: int, update_freq: int = 1) -> Optional[int]:
    """The number of updates the run needs, counted like ``--max-update``, for the pruning at the
    end of ``target_epoch`` to run (it runs in that epoch's last training step, before its
    update), seen from a step at ``update_num`` whose batches the epoch iterator has taken.
    None when the iterator cannot tell (no epoch started)."""
    try:
        epoch, batches, taken = int(train_itr.epoch), len(train_itr), int(train_itr.iterations_in_epoch)
    except (AttributeError, TypeError):
        return None
    if epoch > target_epoch:
        return None
    freq = max(1, int(update_freq or 1))
    per_epoch = math.ceil(batches / freq)
    steps_left = math.ceil(max(0, batches - taken) / freq)  # after this step, in this epoch
    # the pruning step's own update number (0-based) is update_num + steps_left (+ later epochs);
    # fairseq stops once num_updates >= --max-update, so that step runs when it is < max_update
    return update_num + steps_left + (target_epoch - epoch) * per_epoch + 1


def warn_if_max_update_ends_first(cfg, train_itr, update_num: int, target_epoch: int) -> Optional[str]:
    """At the run's first step: a warning (logged and returned) when ``--max-update`` stops the run
    before the pruning epoch that reaches the head target."""
    max_update = int(getattr(cfg, "max_update", 0) or 0)
    if max_update <= 0 or target_epoch is None:
        return None
    freq = cfg.update_freq[0] if getattr(cfg, "update_freq", None) else 1
    need = updates_until_target(train_itr, update_num, target_epoch, freq)
    if need is None or need <= max_update:
        return None
    msg = (f"--max-update {max_update} ends the run before epoch {target_epoch} ends (about {need} updates are "
           f"needed, {math.ceil(len(train_itr) / max(1, int(freq or 1)))} per epoch): the head target "
           f"{_target_text(cfg)} (reached at --np-target-epoch {target_epoch}) will not be reached. Raise "
           f"--max-update to at least {need}, or lower --np-target-epoch")
    logger.warning(msg)
    return msg


def warn_if_target_not_reached(cfg, model: nn.Module, why: str) -> Optional[str]:
    """At the run's last step: a warning (logged and returned) when the model still has more heads
    than the target."""
    counts = head_counts(model)
    if target_reached(cfg, counts):
        return None
    msg = (f"the run ends ({why}) with {sum(counts)} heads ({'.'.join(map(str, counts))} per module): the head "
           f"target {_target_text(cfg)} was NOT reached; the checkpoints keep the heads above. Train to the end of "
           "--np-target-epoch (raise --max-update), or lower --np-target-epoch")
    logger.warning(msg)
    return msg
