"""Exact zeros for HF Trainer runs: the proximal step of the penalties after every optimizer
step (``NeuroPruneArguments(proximal=True)``) and a target sparsity
(``target_sparsity=S``), the same math as the fairseq task (:mod:`..core.target`).

The HF objective is the model's mean loss + ``alpha * R_attn + beta * R_mlp`` (the penalty
counts once per optimizer step), so the proximal strengths are ``lr * alpha`` and ``lr * beta``
with the learning rate of the step just taken.
"""
from typing import Optional

import torch
from transformers import TrainerCallback

from ..core.target import SparsifyRoles, cubic_target, reapply_masks_, sparsify_step_, zero_masks
from ..core.policy import sparsify_roles
from .pruning import matrices
from .roles import attention_sites, mlp_sites


def hf_roles(model, np_args) -> SparsifyRoles:
    attn_all, mlp_all = attention_sites(model), mlp_sites(model)
    return sparsify_roles(attention_sites(model, np_args.attn_kinds), mlp_sites(model, np_args.mlp_kinds),
                          attn_all, mlp_all, np_args.penalty, np_args.eps)


def _step_lr(optimizer) -> float:
    """The learning rate of the step just taken (the scheduler steps after this callback)."""
    opt = optimizer
    while opt is not None and not isinstance(opt, torch.optim.Optimizer):
        opt = getattr(opt, "optimizer", None)
    if opt is None:
        raise ValueError("NeuroPrune proximal step: cannot find the torch optimizer's learning rate")
    return float(opt.param_groups[0]["lr"])


class SparsifyCallback(TrainerCallback):
    """Masks zeros before every optimizer step (target mode), then applies the proximal step and
    the target after it. ``last_target`` / ``last_sparsity`` are what the Trainer logs."""

    def __init__(self, np_args):
        self.np_args = np_args
        self._masks = None
        self.last_target: Optional[float] = None
        self.last_sparsity: Optional[float] = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.np_args.target_sparsity is not None and model is not None:
            self._masks = zero_masks(matrices(model))
        return control

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None:
            return control
        a = self.np_args
        roles = hf_roles(model, a)
        if self._masks is not None:
            reapply_masks_(roles.counted, self._masks)
            self._masks = None
        target = None
        if a.target_sparsity is not None:
            # global_step is incremented after this event: this is update global_step + 1
            target = cubic_target(state.global_step + 1, max(int(state.max_steps), 1), a.target_sparsity,
                                  a.target_start, a.target_end)
            self.last_target = target
        lr = _step_lr(optimizer) if a.proximal else 0.0
        sparsify_step_(roles, lr * a.alpha, lr * a.beta, a.proximal, target)
        with torch.no_grad():
            present = sum(w.numel() for w in roles.counted)
            zero = sum(int((w == 0).sum()) for w in roles.counted)
        self.last_sparsity = 100.0 * (roles.dense - present + zero) / max(roles.dense, 1)
        return control
