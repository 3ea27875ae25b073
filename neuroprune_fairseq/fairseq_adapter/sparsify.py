"""``--np-proximal`` and ``--np-target-sparsity`` for fairseq: exact zeros during training.

The options live on the ``neuroprune_translation`` task because the work happens in the
task's ``optimizer_step`` (fairseq calls it for every update, after the gradients are
reduced, scaled and clipped): the penalties of the ``neuroprune_ce`` / ``l1_ce`` criterion
are applied as a proximal step with the learning rate of that update, and the target
sparsity is enforced (:mod:`neuroprune_fairseq.core.target`).

The proximal step optimises the same objective as the gradient mode on the same
``--np-penalty-scale``: fairseq divides the summed gradient by the update's sample size, so
'batch' (the penalty added once per micro-batch) weighs it ``alpha * micro_batches /
sample_size`` per target token and 'token' weighs it ``alpha``. The step is ``lr`` times
that (decoupled, as AdamW's weight decay).
"""
import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq import metrics
from fairseq.dataclass import FairseqDataclass
from omegaconf import II

from ..core.target import SparsifyRoles, check_target_options, cubic_target, reapply_masks_, sparsify_step_, zero_masks
from ..core.policy import sparsify_roles
from .sites import attention_sites, matrices, mlp_sites

logger = logging.getLogger(__name__)


@dataclass
class SparsifyConfig(FairseqDataclass):
    np_proximal: bool = field(default=False, metadata={"help": "apply the criterion's penalties (Eq. 1 + Eq. 2, or l1) as a proximal step after every optimizer update, with the update's learning rate, instead of adding their gradient: exact zeros (same objective, same --np-penalty-scale)"})
    np_target_sparsity: Optional[float] = field(default=None, metadata={"help": "percent S (0 <= S < 100): end the run with at least S%% of the attention+MLP matrix weights exactly zero or removed; the target ramps up cubically (Zhu & Gupta) from --np-target-start to --np-target-end (fractions of the run) and zeros stay zero. Needs --max-epoch or --max-update"})
    np_target_start: float = field(default=0.0, metadata={"help": "fraction of the run's updates at which the target ramp starts"})
    np_target_end: float = field(default=0.75, metadata={"help": "fraction of the run's updates at which the target reaches --np-target-sparsity (the rest trains at that sparsity)"})
    # read from the global config (same names, as fairseq requires for interpolated fields)
    max_update: int = II("optimization.max_update")
    max_epoch: int = II("optimization.max_epoch")
    update_freq: List[int] = II("optimization.update_freq")


def check_sparsify_setup(cfg) -> None:
    """Errors that name the problem and the fix, before any data is read."""
    target = cfg.np_target_sparsity
    check_target_options(target, cfg.np_target_start, cfg.np_target_end)
    if not (cfg.np_proximal or target is not None):
        return
    flat_master = (cfg.fp16 and not cfg.memory_efficient_fp16) or (cfg.bf16 and not cfg.memory_efficient_bf16)
    if flat_master:
        raise ValueError("--fp16/--bf16 keep fp32 copies of the weights that the proximal step / target mask "
                         "would not reach; use --memory-efficient-fp16 or --amp")
    if target is not None and not ((cfg.max_epoch or 0) > 0 or (cfg.max_update or 0) > 0):
        raise ValueError("--np-target-sparsity ramps over the run: give its length with --max-epoch or --max-update")


class Sparsifier:
    """State of the proximal step / target for one fairseq run (attached to the task)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.proximal = bool(cfg.np_proximal)
        self.target = cfg.np_target_sparsity
        self.criterion = None
        self._micro = [0.0, 0.0]  # sample size and micro-batches since the last update
        self._masks = None
        self._total = None
        self.last_target = None

    @staticmethod
    def check_criterion(criterion) -> None:
        from .criterion import NeuroPruneCriterion

        if not isinstance(criterion, NeuroPruneCriterion):
            raise ValueError(f"--np-proximal / --np-target-sparsity take the penalty from the criterion: use "
                             f"--criterion neuroprune_ce or l1_ce (got {type(criterion).__name__})")

    def record(self, criterion, sample_size, ignore_grad: bool) -> None:
        self.criterion = criterion
        if not ignore_grad:
            self._micro[0] += float(sample_size)
            self._micro[1] += 1.0

    def roles(self, model) -> SparsifyRoles:
        c = self.criterion
        attn_all, mlp_all = attention_sites(model), mlp_sites(model)
        return sparsify_roles([s for s in attn_all if s.kind in c.attn_kinds], [s for s in mlp_all if s.kind in c.mlp_kinds],
                              attn_all, mlp_all, c.penalty, c.np_eps)

    def total_updates(self, train_itr) -> int:
        if self._total is None:
            cfg, total = self.cfg, []
            if (cfg.max_epoch or 0) > 0 and train_itr is not None:
                freq = int(cfg.update_freq[0]) if cfg.update_freq else 1
                total.append(cfg.max_epoch * math.ceil(len(train_itr) / freq))
            if (cfg.max_update or 0) > 0:
                total.append(cfg.max_update)
            if not total:
                raise ValueError("--np-target-sparsity: cannot tell the run's length (--max-epoch/--max-update)")
            self._total = min(total)
            logger.info(f"NeuroPrune target sparsity {self.target}% over {self._total} updates "
                        f"(ramp {cfg.np_target_start:g}..{cfg.np_target_end:g} of the run)")
        return self._total

    def before_step(self, model) -> None:
        if self.target is not None:
            self._masks = zero_masks(matrices(model))

    def _coefficients(self, device):
        """Per-target-token weights of the attention and MLP penalties in this update."""
        c = self.criterion
        if c.scale == "token":
            return c.alpha, c.beta
        sample_size, micro = self._micro
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            t = torch.tensor([sample_size, micro], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            sample_size, micro = t.tolist()
        per = micro / sample_size if sample_size > 0 else 0.0
        return c.alpha * per, c.beta * per

    def after_step(self, model, lr: float, update_num: int, train_itr) -> None:
        if self.criterion is None:
            return
        roles = self.roles(model)
        if self._masks is not None:
            reapply_masks_(roles.counted, self._masks)
            self._masks = None
        target = None
        if self.target is not None:
            target = cubic_target(update_num + 1, self.total_updates(train_itr), self.target,
                                  self.cfg.np_target_start, self.cfg.np_target_end)
            self.last_target = target
            metrics.log_scalar("target_sparsity", target, round=2)
        a, b = self._coefficients(roles.counted[0].device) if self.proximal else (0.0, 0.0)
        self._micro = [0.0, 0.0]
        sparsify_step_(roles, lr * a, lr * b, self.proximal, target)


class SparsifyTaskMixin:
    """Put before a fairseq task class in the bases (its config must include
    :class:`SparsifyConfig`'s fields): adds the proximal step / target after every update."""

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        check_sparsify_setup(cfg)
        return super().setup_task(cfg, **kwargs)

    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        active = cfg.np_proximal or cfg.np_target_sparsity is not None
        self.np_sparsifier = Sparsifier(cfg) if active else None
        # read by the criterion: with --np-proximal the penalty's gradient is not added
        self.penalty_by_proximal_step = bool(cfg.np_proximal)

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        if self.np_sparsifier is not None:
            Sparsifier.check_criterion(criterion)
        return criterion

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        out = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        if self.np_sparsifier is not None:
            self.np_sparsifier.record(criterion, out[1], ignore_grad)
        return out

    def optimizer_step(self, optimizer, model, update_num):
        sp = self.np_sparsifier
        if sp is None:
            return super().optimizer_step(optimizer, model, update_num)
        inner = getattr(model, "module", model)
        sp.before_step(inner)
        super().optimizer_step(optimizer, model, update_num)
        sp.after_step(inner, optimizer.get_lr(), update_num, getattr(self, "_train_itr", None))
