"""CoFi's training loop on a HF model with :class:`~neuroprune_fairseq.hf.cofi.CoFiMasks` attached
(CoFi's ``trainer.py``, distillation off as the paper's GLUE runs without a teacher).

Per step: ``loss = task loss + lambda_1 (s - t) + lambda_2 (s - t)^2`` (``s`` the expected
sparsity, ``t`` the target at this pruning step); three optimizers step: the model's (AdamW at
``lr``), the masks' log-alphas (AdamW at ``reg_lr``, CoFi's ``--reg_learning_rate``, no weight
decay) and the lambdas (AdamW at ``reg_lr`` maximising, CoFi's ``lr=-reg_learning_rate``). The
first ``prepruning_steps`` steps train the model alone with the masks fixed at 1 (CoFi's
``--prepruning_finetune_epochs``); the target then ramps linearly over the masks' warm-up
(``CoFiMasks.warmup_steps``, CoFi's ``--lagrangian_warmup_epochs``). After the loop:
:func:`~neuroprune_fairseq.hf.cofi_prune.apply_cofi_masks_`, then (CoFi) fine-tune the pruned
model plainly.
"""
from typing import Callable, Dict, Iterable, List, Tuple

import torch
from torch import Tensor, nn

from .cofi import CoFiMasks
from .dsp import model_loss

__all__ = ["cofi_optimizers", "cofi_loss", "train_cofi_"]


def cofi_optimizers(masks: CoFiMasks, reg_lr: float = 0.01) -> Tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """``(mask optimizer, lambda optimizer)``: AdamW at ``reg_lr`` minimising over the
    log-alphas, AdamW at ``reg_lr`` maximising over ``lambda_1, lambda_2`` (gradient ascent)."""
    if not reg_lr > 0:
        raise ValueError(f"reg_lr must be > 0, got {reg_lr}")
    return (torch.optim.AdamW(masks.mask_parameters(), lr=reg_lr, weight_decay=0.0),
            torch.optim.AdamW(masks.lagrangian_parameters(), lr=reg_lr, weight_decay=0.0, maximize=True))


def cofi_loss(masks: CoFiMasks, task_loss: Tensor, pruning_step: int) -> Tuple[Tensor, Dict[str, float]]:
    """``task_loss`` plus CoFi's Lagrangian at ``pruning_step``; and what to log."""
    lag, s, t = masks.lagrangian(pruning_step)
    info = {"task_loss": float(task_loss.detach()), "lagrangian": float(lag.detach()),
            "expected_sparsity": float(s.detach()), "target_sparsity": float(t),
            "lambda_1": float(masks.lambda_1.detach()), "lambda_2": float(masks.lambda_2.detach())}
    return task_loss + lag, info



def train_cofi_(
    model: nn.Module,
    masks: CoFiMasks,
    batches: Callable[[], Iterable[dict]],
    epochs: int,
    lr: float = 2e-5,
    reg_lr: float = 0.01,
    prepruning_steps: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float = 0.0,
    loss_fn: Callable[[nn.Module, dict], Tensor] = model_loss,
    log_every: int = 0,
) -> Dict:
    """CoFi's loop over ``epochs`` passes of ``batches()`` (a fresh iterable per epoch) with
    ``masks`` attached to ``model`` (attached here if not yet). Leaves the model in eval mode
    with the masks attached. Returns ``{'steps', 'log': [per-step info]}``."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not masks.handles:
        masks.attach(model)
    mask_ids = {id(p) for p in masks.parameters()}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in mask_ids]
    opt = torch.optim.AdamW(weights, lr=lr, weight_decay=weight_decay)
    mask_opt, lambda_opt = cofi_optimizers(masks, reg_lr)
    step, log = 0, []
    model.train()
    try:
        for _ in range(epochs):
            for batch in batches():
                pruning = step >= prepruning_steps
                masks.fixed = None if pruning else {}
                for o in (opt, mask_opt, lambda_opt):
                    o.zero_grad(set_to_none=True)
                task = loss_fn(model, batch)
                if pruning:
                    loss, info = cofi_loss(masks, task, step - prepruning_steps)
                else:
                    loss, info = task, {"task_loss": float(task.detach())}
                loss.backward()
                if max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(weights, max_grad_norm)
                opt.step()
                if pruning:
                    mask_opt.step()
                    lambda_opt.step()
                info["step"] = step
                log.append(info)
                if log_every and step % log_every == 0:
                    print(f"[cofi] {info}", flush=True)
                step += 1
    finally:
        masks.fixed = None
        model.eval()
    return {"steps": step, "log": log}


def lagrangian_only_(masks: CoFiMasks, steps: int, reg_lr: float = 0.01) -> List[float]:
    """Train only the masks and lambdas on the Lagrangian for ``steps`` (no data): the expected
    sparsity after each step. A check of the constraint's pull, not part of CoFi's recipe."""
    mask_opt, lambda_opt = cofi_optimizers(masks, reg_lr)
    out = []
    for step in range(steps):
        mask_opt.zero_grad(set_to_none=True)
        lambda_opt.zero_grad(set_to_none=True)
        lag, s, _ = masks.lagrangian(step)
        lag.backward()
        mask_opt.step()
        lambda_opt.step()
        out.append(float(s.detach()))
    return out
