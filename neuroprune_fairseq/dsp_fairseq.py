"""DSP (Differentiable Subset Pruning, Li et al., TACL 2021) on fairseq, without forking
fairseq's model code.

* :class:`HeadGateHooks` -- a forward pre-hook on every attention module's ``out_proj``
  multiplies head h's slice ``[h*hd:(h+1)*hd]`` of the out-projection's input by
  ``mask[module, h]``. This equals DSP's mask on the head's attention probabilities
  (``(m * P) V = m * (P V)``). Installing the hooks sets ``skip_embed_dim_check`` so
  fairseq takes its Python attention path (torch's fused ``F.multi_head_attention_forward``
  reads ``out_proj.weight`` directly and would bypass the hook); the result is the same.
* criterion ``dsp_ce`` -- label-smoothed cross-entropy; owns the gate logits (one
  ``nn.Parameter``, a flat vector holding every head of every attention module, module
  major), which fairseq's trainer optimises with the model (``trainer._build_optimizer``
  takes ``criterion.parameters()`` too) and saves in the checkpoint's ``"criterion"``
  entry. Training: Gumbel soft top-K mask at the annealed temperature (optionally
  straight-through); eval (validation): the hard top-K of the logits, no noise.
* task ``dsp_translation`` -- fairseq's translation task plus ``--dsp-mode joint|pipelined``
  (pipelined: every model weight frozen, only the gates train) and ``--dsp-pretrained``
  (load a trained model's weights before training, e.g. for pipelined mode); it passes the
  update number to the criterion for the temperature schedule.
* :func:`finalize_heads_` -- physical removal of the pruned heads with NeuroPrune's surgery
  (``core.surgery.prune_heads_`` + ``fairseq_roles.set_num_heads_``); see
  :mod:`neuroprune_fairseq.dsp_finalize` for the command.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from torch import Tensor, nn

from .core.dsp import dsp_mask, dsp_temperature, hard_topk_mask, keep_per_module
from .core.surgery import head_index, prune_heads_
from .criterion import log_per_module
from .fairseq_roles import attention_modules, attn_linears, set_num_heads_

logger = logging.getLogger(__name__)

DSP_MODES = ("joint", "pipelined")
DEFAULT_ANNEAL_STEPS = {"joint": 15000, "pipelined": 250}
EMPTY_POLICIES = ("zero", "keep-best")


class HeadGateHooks:
    """Multiplies every head's attention output by ``mask`` (flat, module-major) through a
    forward pre-hook on each attention module's ``out_proj``. ``mask = None``: no gating."""

    def __init__(self, model: nn.Module):
        self.modules = attention_modules(model)
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no fairseq MultiheadAttention module to gate")
        self.counts = [m.num_heads for _, _, m in self.modules]
        self.offsets = [sum(self.counts[:i]) for i in range(len(self.counts))]
        self.mask: Optional[Tensor] = None
        self.handles = []
        for i, (_, _, mha) in enumerate(self.modules):
            mha.skip_embed_dim_check = True  # Python attention path: it calls out_proj(...)
            self.handles.append(mha.out_proj.register_forward_pre_hook(self._make_hook(i, mha)))

    @property
    def total(self) -> int:
        return sum(self.counts)

    def _make_hook(self, i: int, mha):
        def hook(module, args):
            if self.mask is None:
                return None
            x = args[0]
            n = mha.num_heads
            if n != self.counts[i]:
                raise RuntimeError(f"{self.modules[i][0]} has {n} heads, the gates were built for {self.counts[i]}")
            m = self.mask[self.offsets[i]:self.offsets[i] + n].to(x.dtype)
            return (x * m.repeat_interleave(mha.head_dim),) + tuple(args[1:])

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


# --------------------------------------------------------------------------- criterion


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
                 dsp_init_std=0.0, dsp_lr=-1.0):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        counts = getattr(task, "dsp_head_counts", None)
        if counts is None:
            raise ValueError("--criterion dsp_ce needs --task dsp_translation (it builds the model whose heads are gated)")
        total = sum(counts)
        if not 1 <= dsp_heads <= total:
            raise ValueError(f"--dsp-heads must be in [1, {total}] (the model has {total} heads), got {dsp_heads}")
        if not (dsp_t0 > 0 and dsp_tf > 0):
            raise ValueError("--dsp-t0 and --dsp-tf must be > 0")
        mode = getattr(task.cfg, "dsp_mode", "joint")
        self.k = int(dsp_heads)
        self.t0, self.tf = float(dsp_t0), float(dsp_tf)
        self.anneal_steps = int(dsp_anneal_steps) if dsp_anneal_steps >= 0 else DEFAULT_ANNEAL_STEPS[mode]
        self.straight_through = bool(dsp_straight_through)
        self.gate_lr = float(dsp_lr) if dsp_lr and dsp_lr > 0 else None
        self._gate_opt: Optional[torch.optim.Optimizer] = None
        self._gate_opt_state = None
        self.head_counts = list(counts)
        self.dsp_logits = nn.Parameter(torch.randn(total) * dsp_init_std if dsp_init_std > 0 else torch.zeros(total))
        self.num_updates = 0
        self._hooks: Dict[int, HeadGateHooks] = {}
        logger.info(f"DSP: K={self.k} of {total} heads ({'.'.join(map(str, counts))}), mode={mode}, t0={self.t0:g}, "
                    f"tf={self.tf:g}, T={self.anneal_steps}, straight_through={self.straight_through}, "
                    f"gate lr={'scheduled --lr' if self.gate_lr is None else self.gate_lr}")

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


# --------------------------------------------------------------------------- task


@dataclass
class DSPTranslationConfig(TranslationConfig):
    dsp_mode: ChoiceEnum(list(DSP_MODES)) = field(default="joint", metadata={"help": "joint: train model weights and gate logits together; pipelined: freeze every model weight and train only the gates (give a trained model with --dsp-pretrained)"})
    dsp_pretrained: Optional[str] = field(default=None, metadata={"help": "fairseq checkpoint whose model weights are loaded before training (needed by pipelined mode); a resumed run's checkpoint_last.pt still takes precedence"})


@register_task("dsp_translation", dataclass=DSPTranslationConfig)
class DSPTranslationTask(TranslationTask):
    """Translation with DSP head gates (the gates live in criterion ``dsp_ce``)."""

    cfg: DSPTranslationConfig

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.dsp_head_counts: Optional[List[int]] = None
        self._dsp_criterion: Optional[DSPCriterion] = None  # set by train_step, for optimizer_step

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        mods = attention_modules(model)
        if not mods:
            raise ValueError(f"model {type(model).__name__} has no fairseq MultiheadAttention module; DSP needs an attention model")
        self.dsp_head_counts = [m.num_heads for _, _, m in mods]
        if self.cfg.dsp_pretrained and not from_checkpoint:
            from fairseq import checkpoint_utils

            state = checkpoint_utils.load_checkpoint_to_cpu(self.cfg.dsp_pretrained)
            model.load_state_dict(state["model"], strict=True, model_cfg=cfg)
            counts = [m.num_heads for _, _, m in attention_modules(model)]
            if counts != self.dsp_head_counts:
                raise ValueError(f"--dsp-pretrained has pruned heads {counts}; DSP needs a dense model")
            logger.info(f"DSP: loaded model weights from {self.cfg.dsp_pretrained}")
        if self.cfg.dsp_mode == "pipelined" and not from_checkpoint:
            if not self.cfg.dsp_pretrained:
                raise ValueError("--dsp-mode pipelined trains only the gates of a trained model: give it with --dsp-pretrained")
            for p in model.parameters():
                p.requires_grad_(False)
            logger.info("DSP pipelined: all model weights frozen, only the gate logits train")
        return model

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if isinstance(criterion, DSPCriterion):
            criterion.num_updates = update_num
            self._dsp_criterion = criterion
        loss, sample_size, logging_output = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        if isinstance(criterion, DSPCriterion):
            logging_output["dsp_gate_skip"] = int(skip_nonfinite_gate_grad_(criterion.dsp_logits))
        return loss, sample_size, logging_output

    def optimizer_step(self, optimizer, model, update_num):
        crit = self._dsp_criterion
        if crit is None or crit.gate_lr is None:
            return super().optimizer_step(optimizer, model, update_num)
        step_with_gate_lr(optimizer, crit.dsp_logits, crit.gate_optimizer(getattr(optimizer, "optimizer", None)))


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


# --------------------------------------------------------------------------- finalisation


def dsp_keep_heads(logits: Tensor, k: int, counts: Sequence[int]) -> List[List[int]]:
    """The kept heads per module: DSP's test-time hard top-K of the logits."""
    return keep_per_module(hard_topk_mask(logits.detach().float(), k), counts)


def finalize_heads_(
    model: nn.Module,
    keep: Sequence[Sequence[int]],
    scores: Optional[Tensor] = None,
    empty: str = "zero",
) -> Dict:
    """Physically remove every head not in ``keep[i]`` from attention module i.

    A module whose heads are all pruned cannot have 0 heads in fairseq. ``empty='zero'``
    (default) keeps one placeholder head (the best-scored one) with all its q/k/v rows and
    out-projection columns set to zero, so the module outputs its out-projection bias,
    exactly as the hard-masked DSP model does; ``'keep-best'`` keeps that head with its
    weights (one head over the budget per such module). Returns a report.
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty-module policy must be one of {EMPTY_POLICIES}, got {empty!r}")
    mods = attention_modules(model)
    if len(mods) != len(keep):
        raise ValueError(f"{len(keep)} keep lists for {len(mods)} attention modules")
    offset, active, physical, empties = 0, [], [], []
    for (name, _, mha), ks in zip(mods, keep):
        n = mha.num_heads
        ks = sorted(int(h) for h in ks)
        if any(h < 0 or h >= n for h in ks):
            raise ValueError(f"{name}: head ids {ks} out of range for {n} heads")
        active.append(len(ks))
        if not ks:
            best = int(torch.argmax(scores[offset:offset + n]).item()) if scores is not None else 0
            ks = [best]
            empties.append(name)
            if empty == "zero":
                q, k, v, out = attn_linears(mha)
                idx = head_index([best], mha.head_dim, q.weight.device)
                with torch.no_grad():
                    for lin in (q, k, v):
                        lin.weight[idx] = 0
                        if lin.bias is not None:
                            lin.bias[idx] = 0
                    out.weight[:, idx] = 0
            logger.warning(f"DSP finalise: every head of {name} is pruned; kept head {best} "
                           f"{'zeroed (module outputs its out_proj bias)' if empty == 'zero' else 'with its weights'}")
        if len(ks) < n:
            q, k, v, out = attn_linears(mha)
            prune_heads_(q, k, v, out, mha.head_dim, ks)
            set_num_heads_(mha, len(ks))
        physical.append(len(ks))
        offset += n
    if empty == "keep-best":
        active = [max(a, 1) for a in active]
    return {"heads_per_module": active, "heads_kept": sum(active),
            "physical_heads_per_module": physical, "empty_modules": empties, "empty_policy": empty}
