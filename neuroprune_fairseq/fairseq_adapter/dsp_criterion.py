"""DSP (Differentiable Subset Pruning, Li et al., TACL 2021) on fairseq: criterion ``dsp_ce``.

Label-smoothed cross-entropy of the gated model; owns the gate logits (one ``nn.Parameter``, a
flat vector holding every head of every attention module, module major), which fairseq's
trainer optimises with the model (``trainer._build_optimizer`` takes ``criterion.parameters()``
too) and saves in the checkpoint's ``"criterion"`` entry. Training: Gumbel soft top-K mask at
the annealed temperature (optionally straight-through); eval (validation): the hard top-K of
the logits, no noise. The gates are :class:`~.head_gates.HeadGateHooks`. Task
``dsp_translation`` (:mod:`.dsp_task`) builds this criterion with the model's head counts and
its mode, and calls :meth:`DSPCriterion.set_num_updates`, :meth:`DSPCriterion.skip_nonfinite_gate_grad_`
and :meth:`DSPCriterion.optimizer_step`.
"""
import inspect
import logging
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from torch import Tensor, nn

from ..core.dsp import dsp_mask, dsp_temperature, hard_topk_mask
from .criterion import log_per_module
from .head_gates import HeadGateHooks

logger = logging.getLogger(__name__)

DSP_MODES = ("joint", "pipelined")
DEFAULT_ANNEAL_STEPS = {"joint": 15000, "pipelined": 250}


@dataclass
class DSPCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    dsp_heads: int = field(default=-1, metadata={"help": "K: heads kept in the whole model (global budget over all attention modules); required"})
    dsp_t0: float = field(default=0.1, metadata={"help": "initial temperature of the Gumbel soft top-k (DSP: 0.1)"})
    dsp_tf: float = field(default=1e-8, metadata={"help": "final temperature, reached after --dsp-anneal-steps updates and kept (DSP: 1e-8)"})
    dsp_anneal_steps: int = field(default=-1, metadata={"help": "T: updates over which t goes from t0 to tf, t = exp(log t0 - (step/T)(log t0 - log tf)); -1: DSP's 15000 (joint) or 250 (pipelined)"})
    dsp_straight_through: bool = field(default=False, metadata={"help": "straight-through estimator: hard top-K of the soft mask in the forward pass, soft gradient"})
    dsp_init_std: float = field(default=0.0, metadata={"help": "gate logits start as N(0, std^2) (0: all zero, the top-K is then decided by the Gumbel noise)"})
    dsp_lr: float = field(default=-1.0, metadata={"help": "constant learning rate of the gate logits, as DSP's --pruning-lr (0.2 for IWSLT); -1: the gates follow the model's scheduled --lr"})


@register_criterion("dsp_ce", dataclass=DSPCriterionConfig)
class DSPCriterion(LabelSmoothedCrossEntropyCriterion):
    """Label-smoothed CE of the DSP-gated model; owns the gate logits ``dsp_logits``."""

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 dsp_heads=-1, dsp_t0=0.1, dsp_tf=1e-8, dsp_anneal_steps=-1, dsp_straight_through=False,
                 dsp_init_std=0.0, dsp_lr=-1.0, head_counts: Optional[Sequence[int]] = None, mode: str = "joint"):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        if head_counts is None:
            raise ValueError("--criterion dsp_ce needs --task dsp_translation (it builds the model whose heads are gated)")
        total = sum(head_counts)
        if not 1 <= dsp_heads <= total:
            raise ValueError(f"--dsp-heads must be in [1, {total}] (the model has {total} heads), got {dsp_heads}")
        if not (dsp_t0 > 0 and dsp_tf > 0):
            raise ValueError("--dsp-t0 and --dsp-tf must be > 0")
        if mode not in DSP_MODES:
            raise ValueError(f"DSP mode must be one of {DSP_MODES}, got {mode!r}")
        self.k = int(dsp_heads)
        self.t0, self.tf = float(dsp_t0), float(dsp_tf)
        self.anneal_steps = int(dsp_anneal_steps) if dsp_anneal_steps >= 0 else DEFAULT_ANNEAL_STEPS[mode]
        self.straight_through = bool(dsp_straight_through)
        self.gate_lr = float(dsp_lr) if dsp_lr and dsp_lr > 0 else None
        self._gate_opt: Optional[torch.optim.Optimizer] = None
        self._gate_opt_state = None
        self.head_counts = list(head_counts)
        self.dsp_logits = nn.Parameter(torch.randn(total) * dsp_init_std if dsp_init_std > 0 else torch.zeros(total))
        self.num_updates = 0
        self._hooks: Dict[int, HeadGateHooks] = {}
        logger.info(f"DSP: K={self.k} of {total} heads ({'.'.join(map(str, head_counts))}), mode={mode}, t0={self.t0:g}, "
                    f"tf={self.tf:g}, T={self.anneal_steps}, straight_through={self.straight_through}, "
                    f"gate lr={'scheduled --lr' if self.gate_lr is None else self.gate_lr}")

    @classmethod
    def build_criterion(cls, cfg, task, head_counts: Optional[Sequence[int]] = None, mode: str = "joint"):
        """fairseq's construction from the config, plus what task ``dsp_translation`` passes:
        the head counts of the model it built (the gates) and its ``--dsp-mode``."""
        params = inspect.signature(cls).parameters
        kwargs = {name: getattr(cfg, name) for name in params if name not in ("task", "head_counts", "mode") and hasattr(cfg, name)}
        return cls(task, head_counts=head_counts, mode=mode, **kwargs)

    def set_num_updates(self, num_updates: int) -> None:
        """The update number (the temperature schedule's step)."""
        self.num_updates = num_updates

    def skip_nonfinite_gate_grad_(self) -> bool:
        """After the backward pass: see :func:`skip_nonfinite_gate_grad_`."""
        return skip_nonfinite_gate_grad_(self.dsp_logits)

    def optimizer_step(self, optimizer) -> bool:
        """Step ``optimizer`` (fairseq's) and, with ``--dsp-lr``, the gates with their own
        optimizer; False when the gates follow ``--lr`` (the caller steps ``optimizer``)."""
        if self.gate_lr is None:
            return False
        step_with_gate_lr(optimizer, self.dsp_logits, self.gate_optimizer(getattr(optimizer, "optimizer", None)))
        return True

    def gate_optimizer(self, like=None) -> torch.optim.Optimizer:
        """The gates' own optimizer (``--dsp-lr``), built on first use; its state is saved
        with the criterion (``get_extra_state``) so a resumed run continues it."""
        if self._gate_opt is None:
            self._gate_opt = build_gate_optimizer(self.dsp_logits, self.gate_lr, like)
            if self._gate_opt_state:
                self._gate_opt.load_state_dict(self._gate_opt_state)
        return self._gate_opt

    def get_extra_state(self):
        return {"gate_opt": self._gate_opt.state_dict() if self._gate_opt is not None else None}

    def set_extra_state(self, state):
        self._gate_opt_state = (state or {}).get("gate_opt")
        if self._gate_opt is not None and self._gate_opt_state:
            self._gate_opt.load_state_dict(self._gate_opt_state)

    def temperature(self) -> float:
        return dsp_temperature(self.num_updates, self.t0, self.tf, self.anneal_steps)

    def hooks_for(self, model: nn.Module) -> HeadGateHooks:
        hooks = self._hooks.get(id(model))
        if hooks is None:
            hooks = HeadGateHooks(model)
            if hooks.counts != self.head_counts:
                hooks.remove()
                raise ValueError(f"model heads {hooks.counts} != gate heads {self.head_counts}")
            self._hooks[id(model)] = hooks
        return hooks

    def forward(self, model, sample, reduce=True):
        inner = getattr(model, "module", model)
        hooks = self.hooks_for(inner)
        t = self.temperature()
        mask = dsp_mask(self.dsp_logits, self.k, t, model.training, self.straight_through)
        hooks.mask = mask
        try:
            loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        finally:
            hooks.mask = None
        with torch.no_grad():
            hard = hard_topk_mask(self.dsp_logits, self.k)
            per_module = [int(part.sum()) for part in torch.split(hard, self.head_counts)]
        logging_output.update({
            "dsp_n": 1,
            "dsp_t": t,
            "dsp_mask_sum": float(mask.detach().sum()),
            **{f"dsp_h{i:03d}": h for i, h in enumerate(per_module)},
        })
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        n = sum(log.get("dsp_n", 0) for log in logging_outputs)
        if not n:
            return
        metrics.log_scalar("dsp_t", sum(log.get("dsp_t", 0) for log in logging_outputs) / n, n, round=10)
        metrics.log_scalar("mask_sum", sum(log.get("dsp_mask_sum", 0) for log in logging_outputs) / n, n, round=3)
        metrics.log_scalar_sum("gate_skip", sum(log.get("dsp_gate_skip", 0) for log in logging_outputs))
        keys = sorted(k for k in {k for log in logging_outputs for k in log} if k.startswith("dsp_h"))
        log_per_module("topk_heads_per_module", [sum(log.get(k, 0) for log in logging_outputs) / n for k in keys], n)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return False  # dsp_t and the per-module counts are averaged, not summed


def skip_nonfinite_gate_grad_(gates: Tensor) -> bool:
    """Zero the gate gradient if it or its norm is inf/NaN (this step then leaves the gates alone).

    At small temperatures the K-step soft top-k recursion chains factors 1/(1 - p) and 1/t,
    and its gradient can overflow, or grow so large (~1e20) that fairseq's float32 gradient norm
    does (measured: K = 100 of 108 at t = 0.006). fairseq would stop with "gradients are Nan/Inf"; DSP's fp16 training skipped such steps through the loss
    scaler. We skip the gates' update only; the count is logged as ``gate_skip``.
    """
    g = gates.grad
    if g is None or bool(torch.isfinite(torch.linalg.vector_norm(g))):
        return False
    g.zero_()
    return True


def step_with_gate_lr(optimizer, gates: Tensor, gate_opt: torch.optim.Optimizer) -> None:
    """``optimizer.step()`` for every parameter but ``gates``, which ``gate_opt`` steps.

    DSP's code gives the gate logits their own parameter group with a constant learning
    rate (``--pruning-lr``). fairseq sets one scheduled lr on every group, so the gates keep
    their place in fairseq's optimizer (gradient normalisation and clipping included) but
    are hidden from its step (``grad = None``, which Adam skips) and stepped by ``gate_opt``.
    """
    if hasattr(optimizer, "fp32_optimizer") or hasattr(optimizer, "fp32_params"):
        raise ValueError("--dsp-lr needs fp32 training or --memory-efficient-fp16/bf16 (fp16 master copies hide the gates)")
    grad = gates.grad
    gates.grad = None
    try:
        optimizer.step()
    finally:
        gates.grad = grad
    if grad is not None:
        gate_opt.step()


def build_gate_optimizer(gates: Tensor, gate_lr: float, like=None) -> torch.optim.Optimizer:
    """AdamW at ``gate_lr`` with the betas / eps / weight decay of ``like`` (a torch
    optimizer, e.g. fairseq's Adam, which decouples weight decay too)."""
    group = like.param_groups[0] if like is not None and like.param_groups else {}
    kw = {k: group[k] for k in ("betas", "eps", "weight_decay") if k in group}
    return torch.optim.AdamW([gates], lr=gate_lr, **kw)
