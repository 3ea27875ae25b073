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

from transformers import TrainerCallback

from ..core.controller import optimizer_step_of
from ..core.sparsify_loop import SparsifyLoop
from ..core.sparsity import SparsityReport, count_weights
from ..core.target import SparsifyRoles
from .pruning import HfModel


def hf_roles(model, np_args) -> SparsifyRoles:
    return HfModel(model).sparsify_roles(np_args.attn_kinds, np_args.mlp_kinds, np_args.penalty, np_args.eps)


def _torch_optimizer_or_raise(optimizer):
    opt = HfModel.torch_optimizer(optimizer)
    if opt is None:
        raise ValueError("NeuroPrune proximal step: cannot find the torch optimizer's learning rate")
    return opt


def _step_lr(optimizer) -> float:
    """The learning rate of the step just taken (the scheduler steps after this callback)."""
    return float(_torch_optimizer_or_raise(optimizer).param_groups[0]["lr"])


class SparsifyCallback(SparsifyLoop, TrainerCallback):
    """The loop of :class:`neuroprune_fairseq.core.sparsify_loop.SparsifyLoop` around every
    optimizer step of a HF Trainer: masks zeros before the step (when the cut holds the target),
    then the proximal step and the target after it. ``last_target`` / ``last_sparsity`` /
    ``cut_sparsity`` / ``multipliers`` are what the Trainer logs."""

    def __init__(self, np_args):
        a = self.np_args = np_args
        SparsifyLoop.__init__(self, a.target_sparsity, a.target_start, a.target_end, a.target_mode, a.target_gain,
                              a.by_proximal_step)
        self.last_sparsity: Optional[float] = None
        self.cut_sparsity: Optional[float] = None

    @staticmethod
    def _total(state) -> int:
        return max(int(state.max_steps), 1)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if model is not None and self.masks_due(lambda: self.ramp_done(state.global_step + 1, self._total(state))):
            self.take_masks(HfModel(model).matrices())
        return control

    def on_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None:
            return control
        a = self.np_args
        roles = hf_roles(model, a)
        step = state.global_step + 1  # global_step is incremented after this event
        proximal = self.proximal
        step_of = optimizer_step_of(_torch_optimizer_or_raise(optimizer)) if proximal and a.prox_metric == "optimizer" else None
        lr = _step_lr(optimizer) if proximal and step_of is None else 0.0
        lam_attn, lam_mlp = self.strengths(a.alpha, a.beta, step_of, lr)
        self.after_step(roles, lam_attn, lam_mlp, step_of, step, self._total(state))
        present, zero = count_weights(roles.counted)
        self.last_sparsity = SparsityReport(roles.dense, present, zero).sparsity
        self.cut_sparsity = self.cut_points(roles.dense)
        return control
