"""Exact zeros for HF Trainer runs: the proximal step of the penalties after every optimizer
step (``NeuroPruneArguments(proximal=True)``) and a target sparsity
(``target_sparsity=S``), the same math as the fairseq task (:mod:`..core.target`).

The HF objective is the model's mean loss + ``alpha * R_attn + beta * R_mlp`` (the penalty
counts once per optimizer step), so the proximal strengths are ``alpha`` and ``beta`` times the
optimizer's per-weight step (``prox_metric='optimizer'``: Adam's ``lr / (sqrt(v_hat) + eps)``)
or times the learning rate of the step just taken (``'euclidean'``). ``target_mode='penalty'``
drives them with the controller of :mod:`..core.controller`; ``'cut'`` cuts after every step.
"""
from typing import Optional

import torch
from transformers import TrainerCallback

from ..core.controller import StrengthController, optimizer_step_of, penalty_driven_step_, ramp_done
from ..core.sparsity import count_weights
from ..core.target import SparsifyRoles, cubic_target, reapply_masks_, sparsify_step_, zero_masks
from ..core.policy import sparsify_roles
from .pruning import matrices
from .roles import attention_sites, mlp_sites


def hf_roles(model, np_args) -> SparsifyRoles:
    attn_all, mlp_all = attention_sites(model), mlp_sites(model)
    return sparsify_roles(attention_sites(model, np_args.attn_kinds), mlp_sites(model, np_args.mlp_kinds),
                          attn_all, mlp_all, np_args.penalty, np_args.eps)


def _torch_optimizer(optimizer):
    opt = optimizer
    while opt is not None and not isinstance(opt, torch.optim.Optimizer):
        opt = getattr(opt, "optimizer", None)
    if opt is None:
        raise ValueError("NeuroPrune proximal step: cannot find the torch optimizer's learning rate")
    return opt


def _step_lr(optimizer) -> float:
    """The learning rate of the step just taken (the scheduler steps after this callback)."""
    return float(_torch_optimizer(optimizer).param_groups[0]["lr"])


class SparsifyCallback(TrainerCallback):
    """Masks zeros before every optimizer step (when the cut holds the target), then applies the
    proximal step and the target after it. ``last_target`` / ``last_sparsity`` / ``cut_sparsity``
    / ``multipliers`` are what the Trainer logs."""

    def __init__(self, np_args):
        self.np_args = np_args
        self._masks = None
        self.last_target: Optional[float] = None
        self.last_sparsity: Optional[float] = None
        self.driven = np_args.target_sparsity is not None and np_args.target_mode == "penalty"
        self.controller = StrengthController(gain=np_args.target_gain) if self.driven else None
        self.cut_zeros = 0
        self.cut_sparsity: Optional[float] = None
        self.multipliers = None

    def _done(self, state, step: int) -> bool:
        return ramp_done(step, max(int(state.max_steps), 1), self.np_args.target_end)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        a = self.np_args
        if a.target_sparsity is not None and model is not None and (not self.driven or self._done(state, state.global_step + 1)):
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
        step = state.global_step + 1  # global_step is incremented after this event
        if a.target_sparsity is not None:
            target = cubic_target(step, max(int(state.max_steps), 1), a.target_sparsity, a.target_start, a.target_end)
            self.last_target = target
        proximal = a.by_proximal_step
        step_of = optimizer_step_of(_torch_optimizer(optimizer)) if proximal and a.prox_metric == "optimizer" else None
        scale = 1.0 if step_of is not None else (_step_lr(optimizer) if proximal else 0.0)
        if self.driven:
            rep = penalty_driven_step_(roles, scale * a.alpha, scale * a.beta, step_of, target, self.controller,
                                       step, max(int(state.max_steps), 1), a.target_end)
            self.cut_zeros += rep["cut"]
            self.multipliers = rep["multipliers"]
        else:
            self.cut_zeros += sparsify_step_(roles, scale * a.alpha, scale * a.beta, proximal, target, step_of=step_of)
        present, zero = count_weights(roles.counted)
        self.last_sparsity = 100.0 * (roles.dense - present + zero) / max(roles.dense, 1)
        self.cut_sparsity = 100.0 * self.cut_zeros / max(roles.dense, 1)
        return control
