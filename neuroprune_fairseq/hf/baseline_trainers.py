"""HF ``Trainer`` subclasses for the GLUE runner's baselines (the runner trains with a Trainer):

* :class:`DSPTrainer`  -- DSP joint: every training forward pass runs with DSP's Gumbel soft top-K
  mask at the annealed temperature (``state.global_step`` is the schedule's step; ``anneal_steps``
  defaults to the run's ``max_steps``); the gate logits have their own AdamW at a constant
  ``gate_lr`` (DSP's ``--pruning-lr``), stepped after the model's optimizer. Then
  :func:`neuroprune_fairseq.hf.dsp.dsp_topk_` and evaluate the pruned model.
* :class:`CoFiTrainer` -- CoFi: masks attached, the Lagrangian added to the training loss after
  ``prepruning_steps``, the log-alphas (AdamW at ``reg_lr``) and lambdas (AdamW maximising at
  ``reg_lr``) stepped after the model's optimizer. Evaluation runs with the deterministic masks
  (the hooks use them in eval mode). Then
  :func:`neuroprune_fairseq.hf.cofi_prune.apply_cofi_masks_` and fine-tune the pruned model.

The model's own optimizer, scheduler and gradient clipping are the Trainer's and do not see
the gates / masks (they are not parameters of the model).
"""
from typing import Optional

import torch
from transformers import Trainer, TrainerCallback

from ..core.dsp import dsp_temperature
from .cofi import CoFiMasks
from .cofi_train import cofi_optimizers
from .dsp import HeadGates, check_k

__all__ = ["DSPTrainer", "CoFiTrainer"]


class _StepAfterModel(TrainerCallback):
    """Calls ``step()`` right after the Trainer's optimizer step (before it zeroes the grads)."""

    def __init__(self, step):
        self.step = step

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.step()


def _with_extra(result, extra, return_outputs):
    if extra is None:
        return result
    return (result[0] + extra, result[1]) if return_outputs else result + extra


class DSPTrainer(Trainer):
    """A ``Trainer`` for DSP joint training of ``model`` with ``gates`` (attached to it)."""

    def __init__(self, *args, gates: HeadGates, k: int, gate_lr: float = 0.2, t0: float = 0.1, tf: float = 1e-8,
                 anneal_steps: Optional[int] = None, straight_through: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.gates, self.k = gates, check_k(k, gates.total)
        if not (t0 > 0 and tf > 0) or not gate_lr > 0:
            raise ValueError(f"t0, tf and gate_lr must be > 0, got {t0}, {tf}, {gate_lr}")
        self.t0, self.tf, self.anneal_steps, self.straight_through = t0, tf, anneal_steps, straight_through
        self.gate_optimizer = torch.optim.AdamW([gates.logits], lr=gate_lr, weight_decay=0.0)
        self.gate_skips = 0
        self.add_callback(_StepAfterModel(self._step_gates))

    def temperature(self) -> float:
        steps = self.anneal_steps if self.anneal_steps is not None else max(self.state.max_steps, 1)
        return dsp_temperature(self.state.global_step, self.t0, self.tf, steps)

    def _step_gates(self):
        g = self.gates.logits.grad
        if g is not None and not bool(torch.isfinite(g).all()):
            g.zero_()  # the soft top-K recursion can overflow at tiny t: skip this gate update
            self.gate_skips += 1
        self.gate_optimizer.step()
        self.gate_optimizer.zero_grad(set_to_none=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self.gates.mask = self.gates.dsp_mask(self.k, self.temperature(), training=True,
                                              straight_through=self.straight_through)
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            self.gates.mask = None  # the mask is in the graph already


class CoFiTrainer(Trainer):
    """A ``Trainer`` for CoFi's pruning phase of ``model`` with ``masks`` (attached here)."""

    def __init__(self, *args, masks: CoFiMasks, reg_lr: float = 0.01, prepruning_steps: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if prepruning_steps < 0:
            raise ValueError(f"prepruning_steps must be >= 0, got {prepruning_steps}")
        self.masks, self.prepruning_steps = masks, int(prepruning_steps)
        if not masks.handles:
            masks.attach(self.model)
        self.mask_optimizer, self.lambda_optimizer = cofi_optimizers(masks, reg_lr)
        self.last_lagrangian = {}
        self.add_callback(_StepAfterModel(self._step_masks))

    def pruning(self) -> bool:
        return self.state.global_step >= self.prepruning_steps

    def _step_masks(self):
        if self.pruning():
            self.mask_optimizer.step()
            self.lambda_optimizer.step()
        self.mask_optimizer.zero_grad(set_to_none=True)
        self.lambda_optimizer.zero_grad(set_to_none=True)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            self.masks.fixed = None
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pruning = self.pruning()
        self.masks.fixed = None if pruning else {}  # before pruning: masks at 1
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        lag = None
        if pruning:
            lag, s, t = self.masks.lagrangian(self.state.global_step - self.prepruning_steps)
            self.last_lagrangian = {"expected_sparsity": float(s.detach()), "target_sparsity": t,
                                    "lagrangian": float(lag.detach()), "lambda_1": float(self.masks.lambda_1.detach()),
                                    "lambda_2": float(self.masks.lambda_2.detach())}
        self.masks.fixed = None
        return _with_extra(result, lag, return_outputs)

    def log(self, logs, *args, **kwargs):
        if self.last_lagrangian and "loss" in logs:
            logs = {**logs, **{f"cofi_{k}": round(v, 5) for k, v in self.last_lagrangian.items()}}
        return super().log(logs, *args, **kwargs)
