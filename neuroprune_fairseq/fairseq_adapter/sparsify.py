"""``--np-proximal`` and ``--np-target-sparsity`` for fairseq: exact zeros during training.

The options live on the ``neuroprune_translation`` task because the work happens in the
task's ``optimizer_step`` (fairseq calls it for every update, after the gradients are
reduced, scaled and clipped): the penalties of the ``neuroprune_ce`` / ``l1_ce`` criterion
are applied as a proximal step with the learning rate of that update, and the target
sparsity is enforced (:mod:`neuroprune_fairseq.core.target`).

The proximal step optimises the same objective as the gradient mode on the same
``--np-penalty-scale``: fairseq divides the summed gradient by the update's sample size, so
'batch' (the penalty added once per micro-batch) weighs it ``alpha * micro_batches /
sample_size`` per target token and 'token' weighs it ``alpha``. The step is that coefficient
times the optimizer's per-weight step (``--np-prox-metric optimizer``, the default: Adam's
``lr / (sqrt(v_hat) + eps)``, what the gradient mode's step is under Adam) or times ``lr``
(``euclidean``: decoupled, as AdamW's weight decay).

``--np-target-sparsity S`` is reached by the penalties themselves (``--np-target-mode
penalty``, the default): a controller drives the proximal strengths along the schedule
(:mod:`..core.controller`) and the cut only closes what is left at the end of the ramp;
``--np-target-mode cut`` is the earlier behaviour (a cut of penalty-shaped scores after every
update). The log says how many points of S the removed heads, the penalties and the cut made.

Mixed precision: under ``--fp16`` / ``--bf16`` (fairseq's ``FP16Optimizer``, with or without
``--fp16-no-flatten-grads``) the optimizer steps an fp32 master copy and copies it into the
model's fp16/bf16 weights. The zero masks, the proximal step, the controller and the cut then act
on fp32 views of the master copy (:class:`.fairseq_optim.MasterCopy`), the optimizer metric reads
Adam's ``exp_avg_sq`` of the master slices, and the master is copied into the model after the
step (a master value that rounds to 0 in fp16 is set to 0): master and model hold the same zeros.
``--memory-efficient-fp16/bf16`` and ``--amp`` step the model's own weights: nothing to map.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from fairseq import metrics
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from omegaconf import II

from ..core.controller import optimizer_step_of
from ..core.sparsify_loop import SparsifyLoop
from ..core.target import SparsifyRoles, check_target_options
from .contracts import NeuroPruneTask, PenaltySettings
from .fairseq_optim import master_copy, torch_optimizer
from .sites import FairseqModel, matrices
from .sparsify_state import STATE_KEY, epoch_ending, epoch_report, saved_state, warn_if_below_target

logger = logging.getLogger(__name__)


@dataclass
class SparsifyConfig(FairseqDataclass):
    np_proximal: bool = field(default=False, metadata={"help": "apply the criterion's penalties (Eq. 1 + Eq. 2, or l1) as a proximal step after every optimizer update, with the update's learning rate, instead of adding their gradient: exact zeros (same objective, same --np-penalty-scale)"})
    np_target_sparsity: Optional[float] = field(default=None, metadata={"help": "percent S (0 <= S < 100): end the run with at least S%% of the attention+MLP matrix weights exactly zero or removed; the target ramps up cubically (Zhu & Gupta) from --np-target-start to --np-target-end (fractions of the run) and zeros stay zero. Needs --max-epoch or --max-update"})
    np_target_start: float = field(default=0.0, metadata={"help": "fraction of the run's updates at which the target ramp starts"})
    np_target_end: float = field(default=0.75, metadata={"help": "fraction of the run's updates at which the target reaches --np-target-sparsity (the rest trains at that sparsity)"})
    np_target_mode: ChoiceEnum(["penalty", "cut"]) = field(default="penalty", metadata={"help": "how --np-target-sparsity is reached: 'penalty' (a controller drives the strengths of the proximal steps of the criterion's penalties along the schedule, so the penalties make the zeros; whatever is left at --np-target-end is cut) or 'cut' (after every update the lowest penalty-shaped scores are cut to the schedule; the earlier behaviour)"})
    np_target_gain: float = field(default=0.05, metadata={"help": "'penalty' mode: the controller's step in log strength per percentage point of gap per update"})
    np_prox_metric: ChoiceEnum(["optimizer", "euclidean"]) = field(default="optimizer", metadata={"help": "the proximal step's per-weight step: 'optimizer' (Adam's lr / (sqrt(v_hat) + eps), what the gradient mode's step is under Adam, so alpha and beta mean the same in both modes; lr for optimizers without second moments) or 'euclidean' (lr for every weight)"})
    # read from the global config (same names, as fairseq requires for interpolated fields)
    save_dir: str = II("checkpoint.save_dir")  # a resumed run reads the controller's state from its checkpoint
    restore_file: str = II("checkpoint.restore_file")
    max_update: int = II("optimization.max_update")
    max_epoch: int = II("optimization.max_epoch")
    update_freq: List[int] = II("optimization.update_freq")


def check_sparsify_setup(cfg) -> None:
    """Errors that name the problem and the fix, before any data is read."""
    target = cfg.np_target_sparsity
    check_target_options(target, cfg.np_target_start, cfg.np_target_end)
    if not (cfg.np_proximal or target is not None):
        return
    gain = getattr(cfg, "np_target_gain", 0.05)
    if not (math.isfinite(gain) and gain > 0):
        raise ValueError(f"--np-target-gain must be a finite number > 0, got {gain}")
    if target is not None and not ((cfg.max_epoch or 0) > 0 or (cfg.max_update or 0) > 0):
        raise ValueError("--np-target-sparsity ramps over the run: give its length with --max-epoch or --max-update")


class Sparsifier(SparsifyLoop):
    """The sparsity step of one fairseq run (attached to the task): the loop of
    :class:`neuroprune_fairseq.core.sparsify_loop.SparsifyLoop` on the model's (or under
    ``--fp16`` / ``--bf16`` the master copy's) matrices, with the strengths the criterion's
    penalty (:class:`.contracts.PenaltySettings`) gives this update, the run's length, the
    resume from a checkpoint and fairseq's metrics."""

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__(cfg.np_target_sparsity, getattr(cfg, "np_target_start", 0.0), getattr(cfg, "np_target_end", 0.75),
                         str(getattr(cfg, "np_target_mode", "cut")), float(getattr(cfg, "np_target_gain", 0.05)),
                         bool(cfg.np_proximal))
        self.metric = str(getattr(cfg, "np_prox_metric", "euclidean"))
        self.criterion: Optional[PenaltySettings] = None
        self._micro = [0.0, 0.0]  # sample size and micro-batches since the last update
        self._total = None
        self.dense = None

    @staticmethod
    def check_criterion(criterion, driven: bool = False) -> None:
        from .criterion import NeuroPruneCriterion

        if not isinstance(criterion, NeuroPruneCriterion):
            raise ValueError(f"--np-proximal / --np-target-sparsity take the penalty from the criterion: use "
                             f"--criterion neuroprune_ce or l1_ce (got {type(criterion).__name__})")
        if driven and not (criterion.alpha > 0 or criterion.beta > 0):
            raise ValueError("--np-target-mode penalty drives the strengths --np-alpha / --np-beta up or down from "
                             "the values given: give at least one > 0 (or use --np-target-mode cut)")

    def _resume(self, update_num: int) -> None:
        """A run resumed from a checkpoint (its first update is not update 0) continues with the
        controller's strengths and the cut count that the checkpoint saved in its ``task_state``."""
        if getattr(self, "_resumed", False):
            return
        self._resumed = True
        if update_num == 0:
            return
        path, saved, error = saved_state(self.cfg)
        if error is not None:
            logger.warning(f"NeuroPrune: resumed at update {update_num} but {path} is not readable ({error})")
        if saved:
            self.load_state_dict(saved)
            logger.info(f"NeuroPrune: resumed the target controller from {path}: {saved}")
        elif self.controller is not None:
            logger.warning(f"NeuroPrune: resumed at update {update_num} without the controller's saved state "
                           f"(none in {path}); the strengths start again from --np-alpha / --np-beta")

    def record(self, criterion: PenaltySettings, sample_size, ignore_grad: bool) -> None:
        self.criterion = criterion
        if not ignore_grad:
            self._micro[0] += float(sample_size)
            self._micro[1] += 1.0

    def roles(self, model) -> SparsifyRoles:
        c = self.criterion
        roles = FairseqModel(model).sparsify_roles(c.attn_kinds, c.mlp_kinds, c.penalty, c.np_eps)
        roles.folds_constant_neurons = True  # neuroprune-finalize folds them (remove_dead_neurons_)
        return roles

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
                        f"(ramp {cfg.np_target_start:g}..{cfg.np_target_end:g} of the run, mode {self.mode}, "
                        f"proximal metric {self.metric})")
        return self._total

    def _ramp_done(self, step: int, train_itr) -> bool:
        return self.ramp_done(step, self.total_updates(train_itr))

    def _total_or_none(self, train_itr) -> Optional[int]:
        """The run's length where a target needs it (without one the run's length is never asked)."""
        return self.total_updates(train_itr) if self.target is not None else None

    def before_step(self, model, update_num: int = 0, train_itr=None, optimizer=None) -> None:
        if self.masks_due(lambda: self._ramp_done(update_num + 1, train_itr)):
            weights = matrices(model)
            master = master_copy(optimizer)
            self.take_masks([master.view_of(w) for w in weights] if master is not None else weights)

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

    def _step_of(self, optimizer, master=None):
        if self.metric != "optimizer" or optimizer is None:
            return None
        if master is not None:
            return master.step_of()
        opt = torch_optimizer(optimizer)
        return optimizer_step_of(opt) if isinstance(opt, torch.optim.Optimizer) else None

    def after_step(self, model, lr: float, update_num: int, train_itr, optimizer=None) -> None:
        if self.criterion is None:
            return
        self._resume(update_num)
        roles = self.roles(model)
        self.dense = roles.dense
        # --fp16 / --bf16: the step acts on the fp32 master copy, then the model takes its values
        master = master_copy(optimizer)
        model_weights = roles.counted
        if master is not None:
            roles = master.roles(roles)
        a, b = self._coefficients(roles.counted[0].device) if self.proximal else (0.0, 0.0)
        self._micro = [0.0, 0.0]
        step_of = self._step_of(optimizer, master)
        a, b = self.strengths(a, b, step_of, lr)
        target = super().after_step(roles, a, b, step_of, update_num + 1, self._total_or_none(train_itr))
        if target is not None:
            metrics.log_scalar("target_sparsity", target, round=2)
        if self.driven:
            metrics.log_scalar("mult_attn", self.multipliers["attn"], round=3)
            metrics.log_scalar("mult_mlp", self.multipliers["mlp"], round=3)
        if master is not None:
            master.sync_to_model_(model_weights)
        if self.target is not None and roles.dense:
            metrics.log_scalar("cut_sparsity", self.cut_points(roles.dense), round=2)
            if update_num + 1 == self.total_updates(train_itr):
                warn_if_below_target(roles, self.target)
        self._log_structure_at_epoch_end(model, train_itr)

    def _log_structure_at_epoch_end(self, model, train_itr) -> None:
        """Once per epoch, after its last update: the structure report and the points of sparsity
        made by removed heads (and other removed weights), by the penalties and by the cut."""
        epoch = epoch_ending(train_itr)
        if epoch is None or epoch == getattr(self, "_logged_epoch", None):
            return
        self._logged_epoch = epoch
        logger.info(epoch_report(model, epoch, self.cut_zeros))


class SparsifyTaskMixin:
    """Put before a fairseq task class in the bases (its config must include
    :class:`SparsifyConfig`'s fields): adds the proximal step / target after every update. The
    task must be a :class:`.contracts.NeuroPruneTask`: this sets its ``penalty_by_proximal_step``
    (read by the criterion) and reads its ``train_itr``."""

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        check_sparsify_setup(cfg)
        return super().setup_task(cfg, **kwargs)

    def __init__(self, cfg, *args, **kwargs):
        super().__init__(cfg, *args, **kwargs)
        if not isinstance(self, NeuroPruneTask):
            raise TypeError(f"{type(self).__name__}: SparsifyTaskMixin needs a NeuroPruneTask (contracts.py) in the bases")
        active = cfg.np_proximal or cfg.np_target_sparsity is not None
        self.np_sparsifier = Sparsifier(cfg) if active else None
        # read by the criterion: with a proximal step the penalty's gradient is not added
        self.penalty_by_proximal_step = bool(self.np_sparsifier.proximal) if self.np_sparsifier else False

    def state_dict(self):
        state = dict(super().state_dict())
        if self.np_sparsifier is not None:
            state[STATE_KEY] = self.np_sparsifier.state_dict()
        return state

    def build_criterion(self, cfg, from_checkpoint=False):
        criterion = super().build_criterion(cfg, from_checkpoint)
        if self.np_sparsifier is not None:
            Sparsifier.check_criterion(criterion, self.np_sparsifier.driven)
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
        itr = self.train_itr
        sp.before_step(inner, update_num, itr, optimizer)
        super().optimizer_step(optimizer, model, update_num)
        sp.after_step(inner, optimizer.get_lr(), update_num, itr, optimizer)
