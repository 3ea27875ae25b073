"""Differentiable Subset Pruning (Li, Cotterell, Sachan, TACL 2021): the math, torch only.

* :func:`gumbel_soft_topk`   -- DSP's Gumbel soft top-k relaxation of a K-hot mask
* :func:`dsp_temperature`    -- DSP's exponential temperature annealing
* :func:`hard_topk_mask`     -- the K-hot mask of the K largest scores (test time)
* :func:`straight_through`   -- hard forward pass, soft gradient
* :func:`dsp_mask`           -- the mask used in a forward pass (train: noisy, eval: hard)
* :func:`keep_per_module`    -- split a flat K-hot mask into the kept heads of each module
* :func:`top_k_heads`        -- the K best-scored heads of the model, per module (DSP, Michel et al.)

Scores are a flat vector holding every head of every attention module (module-major),
so modules with different head counts need no padding; the budget K is global.
"""
import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor


def sample_gumbel(shape, like: Tensor, generator: Optional[torch.Generator] = None, eps: float = 1e-20) -> Tensor:
    """Standard Gumbel noise ``-log(-log(U))``."""
    u = torch.rand(shape, dtype=like.dtype, device=like.device, generator=generator)
    return -torch.log(-torch.log(u + eps) + eps)


def gumbel_soft_topk(
    logits: Tensor,
    k: int,
    t: float,
    noise: bool = True,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """DSP's relaxed K-hot mask over the last dimension of ``logits``.

    ``r = w + g`` (Gumbel noise ``g``, omitted with ``noise=False``); ``p_1 = softmax(r/t)``;
    for ``j = 2..K``: ``r += log(max(1 - p_{j-1}, tiny))``, ``p_j = softmax(r/t)``;
    the mask is ``sum_j p_j``. Each ``p_j`` sums to 1, so the mask sums to K; its entries
    lie in [0, 1] up to rounding, and as ``t -> 0`` it tends to the K-hot mask of the K
    largest ``r``.
    """
    n = logits.shape[-1]
    if not 0 <= k <= n:
        raise ValueError(f"budget K={k} must be in [0, {n}]")
    if t <= 0:
        raise ValueError(f"temperature must be > 0, got {t}")
    r = logits + sample_gumbel(logits.shape, logits, generator) if noise else logits
    tiny = torch.finfo(logits.dtype).tiny
    mask = torch.zeros_like(logits)
    p = None
    for _ in range(k):
        if p is not None:
            r = r + torch.log(torch.clamp(1.0 - p, min=tiny))
        p = torch.softmax(r / t, dim=-1)
        mask = mask + p
    return mask


def dsp_temperature(step: int, t0: float = 0.1, tf: float = 1e-8, anneal_steps: int = 15000) -> float:
    """``t = exp(log t0 - (step / T) (log t0 - log tf))`` for ``step < T``, then ``tf``."""
    if anneal_steps <= 0 or step >= anneal_steps:
        return tf
    step = max(step, 0)
    return math.exp(math.log(t0) - (step / anneal_steps) * (math.log(t0) - math.log(tf)))


def hard_topk_mask(scores: Tensor, k: int) -> Tensor:
    """K-hot mask (same dtype) of the K largest entries of ``scores`` (last dimension).
    Ties go to the lower index (``torch.topk`` on CPU is stable for equal values only in
    practice; callers that need determinism should not rely on exact ties)."""
    mask = torch.zeros_like(scores)
    if k > 0:
        idx = torch.topk(scores.detach(), k, dim=-1).indices
        mask.scatter_(-1, idx, 1.0)
    return mask


def straight_through(soft: Tensor, hard: Tensor) -> Tensor:
    """``hard`` in the forward pass, the gradient of ``soft`` in the backward pass."""
    return hard + (soft - soft.detach())  # exactly `hard` in value


def dsp_mask(
    logits: Tensor,
    k: int,
    t: float,
    training: bool,
    straight_through_estimator: bool = False,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    """The head mask of one forward pass.

    Training: Gumbel soft top-k at temperature ``t`` (with the straight-through option, a
    hard top-K of the soft mask forward, the soft mask's gradient backward).
    Eval: the hard top-K of the logits, without noise (DSP's public code samples noise in
    eval mode too; we do not).
    """
    if not training:
        return hard_topk_mask(logits, k)
    soft = gumbel_soft_topk(logits, k, t, noise=True, generator=generator)
    if straight_through_estimator:
        return straight_through(soft, hard_topk_mask(soft, k))
    return soft


def keep_per_module(mask: Tensor, counts: Sequence[int]) -> List[List[int]]:
    """Heads with a non-zero entry in the flat K-hot ``mask``, per module of ``counts`` heads."""
    if mask.numel() != sum(counts):
        raise ValueError(f"mask has {mask.numel()} entries, modules have {sum(counts)} heads")
    out, start = [], 0
    flat = mask.detach().flatten()
    for c in counts:
        out.append([h for h in range(c) if float(flat[start + h]) > 0.5])
        start += c
    return out


def top_k_heads(scores: Tensor, k: int, counts: Sequence[int]) -> List[List[int]]:
    """The kept heads per module when the K best-scored heads of the whole model are kept
    (DSP's test-time hard top-K of the gate logits; Michel et al.'s importance pruning)."""
    return keep_per_module(hard_topk_mask(scores.detach().float(), k), counts)
