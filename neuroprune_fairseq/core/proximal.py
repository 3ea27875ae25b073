"""Proximal maps of NeuroPrune's penalties and of the l1 baseline: exact zeros.

A proximal step ``prox_{lam R}(w) = argmin_x 0.5 ||x - w||^2 + lam R(x)`` after every
optimizer update replaces the penalty's (sub)gradient, decoupled from the optimizer as
AdamW decouples weight decay (``lam = lr * penalty weight``). Unlike a gradient step it
lands on exact zeros.

PyTorch layout, as :mod:`.penalties`: an MLP row is a row of ``fc1``/``fc2``; an attention
input group is a column of ``A = cat([q, k, v], 0)``.
"""
from typing import Tuple

import torch
from torch import Tensor

from .penalties import pa_row_weight


def soft_threshold(w: Tensor, lam) -> Tensor:
    """prox of ``lam * ||x||_1``: ``sign(w) * max(|w| - lam, 0)``. ``lam`` may be a scalar or
    a tensor broadcastable to ``w`` (per-entry thresholds)."""
    if not torch.is_tensor(lam):
        lam = torch.tensor(float(lam), dtype=w.dtype, device=w.device)
    return w - torch.maximum(torch.minimum(w, lam), -lam)


def weighted_row_soft_threshold(w: Tensor, lam: float, row_weight: Tensor) -> Tensor:
    """prox of ``lam * sum_i row_weight[i] * sum_j |x[i, j]|`` (a weighted l1, one weight per row)."""
    return soft_threshold(w, lam * row_weight.to(w.dtype).unsqueeze(1))


def preferential_attachment_prox(w: Tensor, lam: float, eps: float) -> Tensor:
    """prox of one matrix's half of Eq. 1 (``lam * sum_i (n_i / row_len) sum_j |x[i, j]|``) with
    the row weights taken from the current ``w`` (constants, as in the gradient mode): rows that
    are already sparse are shrunk harder, a row with no entry below ``eps`` is left as it is."""
    return weighted_row_soft_threshold(w, lam, pa_row_weight(w, eps))


def sqrt_l1_group_prox(x: Tensor, lam, iters: int = 4) -> Tensor:
    """prox of ``lam * sqrt(||x_g||_1)`` for every row ``g`` of the 2-D ``x`` (one group per row).

    The minimiser is either 0 or ``soft(x_g, tau)`` with ``tau = lam / (2 sqrt(S(tau)))``,
    ``S(tau) = ||soft(x_g, tau)||_1``: a 1-D root search per group, vectorised over groups.

    Fast path (no sort): the fixed-point iteration ``tau <- lam / (2 sqrt(S(tau)))`` from
    ``lam / (2 sqrt(||x_g||_1))`` rises to the smallest root, the local minimum that keeps
    most of the group. It is certified global when ``tau <= tau_c = (2/3) mean|x_g|`` (then
    ``phi(t) = 2 t sqrt(S(t))`` does not decrease on ``[tau, tau_c]``, so no other stationary
    point lies there) and its objective is below ``0.5 sum min(|x_g|, tau_c)^2``, a lower
    bound on the objective of the zero group and of every candidate with a larger threshold.
    Groups that fail the certificate (large ``lam`` against the group) go to the exact solver
    :func:`sqrt_l1_group_prox_sorted`. A zero group stays zero (no NaN).
    ``lam``: a scalar or a ``[G]`` tensor (one strength per group), ``>= 0``.
    """
    g, n, lam = _check_groups(x, lam)
    if g == 0 or n == 0:
        return x.clone()
    a = x.detach().abs()
    lam = lam.to(a.dtype)
    l1 = a.sum(1)
    alive = l1 > 0
    tiny = torch.finfo(a.dtype).tiny

    def s_of(t):  # ||soft(x_g, t)||_1 per group
        return (a - t.unsqueeze(1)).clamp_(min=0).sum(1)

    tau = lam / (2 * l1.clamp(min=tiny).sqrt())
    for _ in range(iters):
        tau = lam / (2 * s_of(tau).clamp(min=tiny).sqrt())
    s = s_of(tau)
    converged = (tau - lam / (2 * s.clamp(min=tiny).sqrt())).abs() <= 1e-5 * tau
    tau_c = (2.0 / 3.0) * l1 / n
    h = 0.5 * torch.minimum(a, tau.unsqueeze(1)).pow_(2).sum(1) + lam * s.sqrt()
    bound = 0.5 * torch.minimum(a, tau_c.unsqueeze(1)).pow_(2).sum(1)
    certified = alive & converged & (tau <= tau_c) & (h < bound)
    t = torch.where(certified, tau, torch.zeros_like(tau)).to(x.dtype).unsqueeze(1)
    out = soft_threshold(x, t)
    out[~alive] = 0
    hard = (alive & ~certified).nonzero().squeeze(1)
    if hard.numel():
        lam_h = lam if lam.numel() == 1 else lam[hard]
        out[hard] = sqrt_l1_group_prox_sorted(x[hard], lam_h)
    return out


def _check_groups(x: Tensor, lam):
    if x.dim() != 2:
        raise ValueError("the group prox expects a 2-D tensor with one group per row")
    g, n = x.shape
    lam = torch.as_tensor(lam, dtype=torch.float64, device=x.device).reshape(-1)
    if lam.numel() not in (1, g) or bool((lam < 0).any()) or not bool(torch.isfinite(lam).all()):
        raise ValueError("lam must be finite and >= 0: a scalar or one value per group")
    return g, n, lam


def sqrt_l1_group_prox_sorted(x: Tensor, lam) -> Tensor:
    """Exact prox of ``lam * sqrt(||x_g||_1)`` per row, for any input (the fallback of
    :func:`sqrt_l1_group_prox`).

    With the group's magnitudes sorted (``a_1 >= a_2 >= ...``, prefix sums ``P_k``), on the
    segment where exactly k entries survive the stationarity condition is the cubic
    ``u^3 - P_k u + lam k / 2 = 0`` in ``u = sqrt(S)``; its largest root is the local minimum
    on that segment. All segments are solved at once (trigonometric form), the candidates
    inside their segment compared by the objective, and the best compared with zero.
    """
    g, n, lam = _check_groups(x, lam)
    if g == 0 or n == 0:
        return x.clone()
    dt = torch.float64
    lam = lam.reshape(-1, 1)
    a, _ = x.detach().abs().to(dt).sort(dim=1, descending=True)
    k = torch.arange(1, n + 1, dtype=dt, device=x.device)
    p = a.cumsum(1)
    q_total = (a * a).sum(1, keepdim=True)
    q_prefix = (a * a).cumsum(1)
    c = lam * k / 2  # cubic u^3 - p u + c = 0
    p_safe = p.clamp(min=1e-300)
    arg = -(3.0 * 3.0 ** 0.5 * c) / (2.0 * p_safe ** 1.5)
    real = (arg >= -1.0) & (p > 0)
    u = 2.0 * (p_safe / 3.0).sqrt() * torch.cos(torch.arccos(arg.clamp(-1.0, 1.0)) / 3.0)
    tau = (p - u * u) / k
    below = torch.cat([a[:, 1:], a.new_zeros(g, 1)], 1)  # a_{k+1}, with a_{n+1} = 0
    valid = real & (tau >= below * (1 - 1e-12)) & (tau <= a * (1 + 1e-12)) & (u > 0)
    obj = 0.5 * (k * tau * tau + q_total - q_prefix) + lam * u
    obj = torch.where(valid, obj, torch.full_like(obj, float("inf")))
    best, idx = obj.min(1)
    tau_best = tau.gather(1, idx.unsqueeze(1)).squeeze(1)
    keep = best < 0.5 * q_total.squeeze(1)
    out = soft_threshold(x.to(dt), tau_best.clamp(min=0).unsqueeze(1)).to(x.dtype)
    return torch.where(keep.unsqueeze(1), out, torch.zeros_like(out))


def attention_group_prox(q: Tensor, k: Tensor, v: Tensor, lam: float) -> Tuple[Tensor, Tensor, Tensor]:
    """prox of Eq. 2 for one attention module: ``lam * sum_j sqrt(||A[:, j]||_1)`` with
    ``A = cat([q, k, v], 0)``; returns the new ``(q, k, v)``."""
    a = torch.cat([q, k, v], 0)
    out = sqrt_l1_group_prox(a.t(), lam).t()
    return tuple(out.split([q.shape[0], k.shape[0], v.shape[0]], 0))


# ------------------------------------------------------------------ a diagonal (Adam) metric
# The prox in the metric ``||x - w||_D^2 = sum_i (x_i - w_i)^2 / s_i`` with a per-weight step
# ``s_i`` (Adam's ``lr / (sqrt(v_hat_i) + eps)``): the step the penalty's gradient would get
# from Adam in the gradient mode, so ``alpha`` means the same in both modes. For the separable
# maps (l1, Eq. 1's weighted l1) it is the soft-threshold at ``coef * s_i`` (exact).


def sqrt_l1_group_prox_metric(x: Tensor, coef, step: Tensor, iters: int = 8) -> Tensor:
    """prox of ``coef * sqrt(||x_g||_1)`` per row ``g`` of ``x`` in the diagonal metric with
    per-entry steps ``step`` (same shape as ``x``, ``> 0``).

    Stationary points are ``x_i = soft(w_i, tau * s_i)`` with ``tau = coef / (2 sqrt(S(tau)))``,
    ``S(tau) = sum_i max(|w_i| - tau s_i, 0)``. The fixed-point iteration from
    ``coef / (2 sqrt(||w_g||_1))`` rises to the smallest root (the minimum that keeps most of the
    group); it is kept when its objective is below the zero group's
    ``0.5 sum w_i^2 / s_i``, otherwise the group is zero (also when no root exists: ``S`` reaches
    0). With a uniform step this is :func:`sqrt_l1_group_prox` at ``lam = coef * s`` up to the
    certificate, which this version replaces by the comparison with zero.
    ``coef``: a scalar or one value per group (``>= 0``).
    """
    g, n, coef = _check_groups(x, coef)
    if step.shape != x.shape:
        raise ValueError(f"step must have the shape of x {tuple(x.shape)}, got {tuple(step.shape)}")
    if g == 0 or n == 0:
        return x.clone()
    dt = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    a = x.detach().abs().to(dt)
    s = step.detach().to(dt).clamp(min=torch.finfo(dt).tiny)
    coef = coef.to(dt)
    tiny = torch.finfo(dt).tiny
    l1 = a.sum(1)
    alive = l1 > 0

    def s_of(t):
        return (a - t.unsqueeze(1) * s).clamp_(min=0).sum(1)

    tau = coef / (2 * l1.clamp(min=tiny).sqrt())
    for _ in range(iters):
        tau = coef / (2 * s_of(tau).clamp(min=tiny).sqrt())
    thr = tau.unsqueeze(1) * s
    kept = (a - thr).clamp(min=0)
    big = kept.sum(1)
    obj = 0.5 * (torch.minimum(a, thr).pow(2) / s).sum(1) + coef * big.sqrt()
    zero_obj = 0.5 * (a * a / s).sum(1)
    keep = alive & (big > 0) & (obj < zero_obj)
    out = x.sign() * kept.to(x.dtype)
    return torch.where(keep.unsqueeze(1), out, torch.zeros_like(out))


def attention_group_prox_metric(q: Tensor, k: Tensor, v: Tensor, coef: float,
                                steps: Tuple[Tensor, Tensor, Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`attention_group_prox` in the diagonal metric (one step tensor per matrix)."""
    a = torch.cat([q, k, v], 0)
    s = torch.cat(list(steps), 0)
    out = sqrt_l1_group_prox_metric(a.t(), coef, s.t()).t()
    return tuple(out.split([q.shape[0], k.shape[0], v.shape[0]], 0))
