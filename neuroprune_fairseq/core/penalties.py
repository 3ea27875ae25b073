"""NeuroPrune's two penalties (Eq. 1 and Eq. 2) and the plain l1 baseline.

PyTorch layout: ``fc1.weight`` is ``[d_e, d]`` (a row per hidden neuron), ``fc2.weight`` is
``[d, d_e]``; ``q/k/v.weight`` are ``[d_attn, d]`` so an input dimension is a *column*.
"""
from typing import Iterable

import torch
from torch import Tensor


def pa_row_weight(weight: Tensor, eps: float) -> Tensor:
    """Eq. 1's row weights ``n_i / row_len``: the share of row ``i``'s entries with ``|w| < eps``
    (no gradient: constants of the current weights)."""
    with torch.no_grad():
        return (weight.abs() < eps).to(weight.dtype).mean(dim=1)


def preferential_attachment_l1(weight: Tensor, eps: float) -> Tensor:
    """One matrix's half of Eq. 1: ``sum_i (n_i / row_len) * sum_j |W[i, j]|``.

    ``n_i`` counts the entries of row ``i`` with ``|w| < eps``. The row weights are constants
    of the current weights (computed without gradient): sparse rows are pushed harder.
    """
    row_weight = pa_row_weight(weight, eps)
    return (row_weight * weight.abs().sum(dim=1)).sum()


def mlp_preferential_attachment_penalty(fc1_weight: Tensor, fc2_weight: Tensor, eps: float) -> Tensor:
    """Eq. 1, R_mlp for one MLP block.

    ``sum_i (n_in[i] / d) sum_j |fc1[i, j]| + sum_i (n_out[i] / d_e) sum_j |fc2[i, j]|``
    with ``fc1_weight`` of shape ``[d_e, d]`` and ``fc2_weight`` of shape ``[d, d_e]``.
    """
    if fc1_weight.dim() != 2 or fc2_weight.dim() != 2:
        raise ValueError("MLP weights must be 2-D matrices")
    return preferential_attachment_l1(fc1_weight, eps) + preferential_attachment_l1(fc2_weight, eps)


def attention_group_penalty(q_weight: Tensor, k_weight: Tensor, v_weight: Tensor) -> Tensor:
    """Eq. 2, R_attn for one attention module: ``sum_j sqrt(sum_i |A[i, j]|)``.

    ``A = cat([q, k, v], 0)`` is ``[3 * d_attn, d]``; a group is an input dimension (a column
    here, a row in the paper's layout). sqrt has an infinite slope at 0, so groups that are
    exactly zero contribute 0 with a zero (finite) gradient instead of NaN.
    """
    group = (
        q_weight.abs().sum(0) + k_weight.abs().sum(0) + v_weight.abs().sum(0)
    )
    alive = group > 0
    safe = torch.where(alive, group, torch.ones_like(group))
    return torch.where(alive, safe.sqrt(), torch.zeros_like(group)).sum()


def l1_penalty(weights: Iterable[Tensor]) -> Tensor:
    """The paper's baseline: unweighted ``sum |w|`` over the given matrices."""
    total = None
    for w in weights:
        term = w.abs().sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("l1_penalty needs at least one weight")
    return total
