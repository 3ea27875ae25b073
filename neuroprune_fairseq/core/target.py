"""Exact zeros during training: the proximal step of the penalties after every optimizer
update, and a target sparsity reached along a schedule. Torch only; the adapters (fairseq
task, HF callback) say which matrices play which role and call :func:`sparsify_step_`.

Target sparsity (our choice; the paper only reports the sparsity reached):
* schedule: the cubic ramp of Zhu & Gupta (2017), ``s(t) = S (1 - (1 - p)^3)`` with
  ``p = (t - start T) / ((end - start) T)`` clipped to [0, 1], T the run's updates: fast
  early while the network is redundant, gentle near the end, then ``end .. 1`` of the run at
  ``S`` to recover;
* enforcement: after the proximal step, every pool of matrices whose share of exact zeros is
  below ``s(t)`` gets its lowest-scoring non-zero weights set to zero, and zeros stay zero
  (the adapters re-apply a mask taken right before each optimizer step). The scores are
  shaped by the penalty, so the structure the penalty prefers is what gets cut first:
  - attention q, k, v (Eq. 2): ``|w| * sqrt(||A[:, j]||_1)``, the step strength at which the
    group prox would reach ``|w|`` (whole weak input groups go first); l1: ``|w|``;
  - MLP fc1, fc2 (Eq. 1): ``|w| / max(n_i, 1/2)``, the step strength at which the weighted
    soft-threshold zeroes ``w`` (sparse rows go first: rich get richer); the floor of half a
    connection ranks rows that have no small entry yet by magnitude; l1: ``|w|``;
  - every other counted matrix (out_proj, modules outside the penalised kinds): ``|w|``.
  Weights already removed (pruned heads) count towards the target: every pool reaches the
  same share ``s' = (s(t) D - R) / (D - R)`` of its present weights (D dense weights, R
  removed), so the model ends at ``s(t)`` of the dense count, not above it.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .penalties import pa_row_weight
from .proximal import (attention_group_prox, attention_group_prox_metric, preferential_attachment_prox,
                       soft_threshold)

Mlp = Tuple[Sequence[Tensor], Tensor]  # (fc1 weights: one, or two for a gated MLP; fc2 weight)
StepOf = Callable[[Tensor], Union[float, Tensor]]  # a weight -> its per-entry proximal step


def cubic_target(step: int, total: int, final: float, start: float = 0.0, end: float = 0.75) -> float:
    """Target sparsity (percent) after ``step`` of ``total`` updates: 0 before ``start * total``,
    ``final`` from ``end * total`` on, the cubic ramp of Zhu & Gupta (2017) in between."""
    if total <= 0:
        raise ValueError("the run's number of updates must be > 0")
    t0, t1 = start * total, end * total
    p = 1.0 if t1 <= t0 else min(max((step - t0) / (t1 - t0), 0.0), 1.0)
    return final * (1.0 - (1.0 - p) ** 3)


def check_target_options(target: Optional[float], start: float, end: float) -> None:
    """Clear errors for the target-sparsity options (both adapters use the same names)."""
    if target is None:
        return
    if not (isinstance(target, (int, float)) and math.isfinite(target) and 0 <= target < 100):
        raise ValueError(f"target sparsity must be a percent with 0 <= S < 100, got {target!r}")
    if not (0 <= start < end <= 1):
        raise ValueError(f"the target ramp needs 0 <= start < end <= 1 (fractions of the run), got start={start}, end={end}")


def attention_scores(q: Tensor, k: Tensor, v: Tensor, penalty: str) -> Tuple[Tensor, Tensor, Tensor]:
    if penalty == "l1":
        return q.abs(), k.abs(), v.abs()
    col = (q.abs().sum(0) + k.abs().sum(0) + v.abs().sum(0)).sqrt()
    return q.abs() * col, k.abs() * col, v.abs() * col


def mlp_scores(w: Tensor, penalty: str, eps: float) -> Tensor:
    if penalty == "l1":
        return w.abs()
    return w.abs() / pa_row_weight(w, eps).clamp(min=0.5 / w.shape[1]).unsqueeze(1)


@dataclass
class Pool:
    """Matrices that reach the target together, and how their weights are ranked."""

    weights: List[Tensor]
    scores: Callable[[], List[Tensor]]


def kth_smallest(v: Tensor, k: int) -> Tensor:
    """The k-th smallest value of the 1-D ``v`` (1-based), exact. Large inputs: the value is
    bracketed with a strided sample's order statistics and selected within the bracket (a few
    comparison passes instead of a selection over everything)."""
    n = v.numel()
    if n <= 262144:
        return v.kthvalue(k).values
    stride = n // 65536
    sample = v[::stride]
    m = sample.numel()
    pos, slack = k / n * m, 4.0 * math.sqrt(m) + 8
    lo = sample.kthvalue(max(int(pos - slack), 1)).values
    hi = sample.kthvalue(min(int(pos + slack) + 1, m)).values
    below = int((v < lo).sum())
    band = v[(v >= lo) & (v <= hi)]
    if below < k <= below + band.numel():
        return band.kthvalue(k - below).values
    return v.kthvalue(k).values


def enforce_pool_(pool: Pool, target: float) -> int:
    """Zero the lowest-scoring non-zero weights of the pool until at least ``target`` percent of
    its present weights are exactly zero; returns how many were zeroed."""
    present = sum(w.numel() for w in pool.weights)
    return cut_pool_to_(pool, math.ceil(target / 100.0 * present - 1e-9)) if present else 0


def cut_pool_to_(pool: Pool, zeros_wanted: int) -> int:
    """Zero the lowest-scoring non-zero weights of the pool until ``zeros_wanted`` of its
    weights are exactly zero; returns how many were zeroed."""
    present = sum(w.numel() for w in pool.weights)
    if not present:
        return 0
    zeros = int(sum(int((w == 0).sum()) for w in pool.weights))
    need = min(zeros_wanted, present) - zeros
    if need <= 0:
        return 0
    scores = pool.scores()
    # zeros rank first (-inf): the cut is the (zeros + need)-th smallest score
    flat = torch.cat([torch.where(w != 0, s, float("-inf")).reshape(-1).float() for s, w in zip(scores, pool.weights)])
    cut = kth_smallest(flat, zeros + need)
    n = 0
    for s, w in zip(scores, pool.weights):
        kill = (s <= cut) & (w != 0)
        n += int(kill.sum())
        w.masked_fill_(kill, 0.0)
    return n


@dataclass
class SparsifyRoles:
    """Which weights play which role, as the adapters find them for one model."""

    attn: List[Tuple[Tensor, Tensor, Tensor]]  # penalised attention modules: q, k, v weights
    mlp: List[Mlp]  # penalised MLP blocks
    counted: List[Tensor]  # every attention (q, k, v, out) and MLP matrix the sparsity counts
    dense: int = 0  # weights of those matrices in the dense model (0: what is present)
    penalty: str = "neuroprune"  # 'neuroprune' | 'l1'
    eps: float = 1e-4
    folds_constant_neurons: bool = False  # the adapter's finalise removes neurons with all-zero fc1 rows

    def pools(self) -> List[Pool]:
        penalty, eps = self.penalty, self.eps
        attn_w = [w for qkv in self.attn for w in qkv]
        mlp_w = [w for fc1s, fc2 in self.mlp for w in (*fc1s, fc2)]
        taken = {id(w) for w in attn_w + mlp_w}
        rest = [w for w in self.counted if id(w) not in taken]
        return [
            Pool(attn_w, lambda: [s for qkv in self.attn for s in attention_scores(*qkv, penalty)]),
            Pool(mlp_w, lambda: [mlp_scores(w, penalty, eps) for w in mlp_w]),
            Pool(rest, lambda: [w.abs() for w in rest]),
        ]


def proximal_step_(roles: SparsifyRoles, lam_attn: float, lam_mlp: float, step_of: Optional[StepOf] = None) -> None:
    """In place: the prox of ``lam_attn * sum R_attn + lam_mlp * sum R_mlp`` (or of the l1
    baseline with the same two strengths), one step.

    ``step_of=None``: the Euclidean prox, ``lam_*`` already include the learning rate.
    ``step_of(w)``: the per-weight step of ``w`` (a tensor of its shape, e.g. Adam's
    ``lr / (sqrt(v_hat) + eps)``, or a float); ``lam_*`` are then the penalty coefficients and
    the prox is taken in that diagonal metric (:mod:`.proximal`): what the same coefficients do
    in the gradient mode under that optimizer.

    Weights held in fp16/bf16 (``--memory-efficient-fp16``) are stepped in fp32 and written back:
    Adam's step of a weight with a tiny second moment (``lr / eps`` at ``v = 0``) overflows fp16."""
    f = _fp32
    with torch.no_grad():
        for q, k, v in roles.attn:
            if lam_attn <= 0:
                break
            if step_of is None:
                if roles.penalty == "l1":
                    for w in (q, k, v):
                        w.copy_(soft_threshold(f(w), lam_attn))
                else:
                    for w, new in zip((q, k, v), attention_group_prox(f(q), f(k), f(v), lam_attn)):
                        w.copy_(new)
                continue
            steps = tuple(_as_step(step_of(w), f(w)) for w in (q, k, v))
            if roles.penalty == "l1":
                for w, st in zip((q, k, v), steps):
                    w.copy_(soft_threshold(f(w), lam_attn * st))
            else:
                for w, new in zip((q, k, v), attention_group_prox_metric(f(q), f(k), f(v), lam_attn, steps)):
                    w.copy_(new)
        for fc1s, fc2 in roles.mlp:
            if lam_mlp <= 0:
                break
            for w in (*fc1s, fc2):
                w32 = f(w)
                if step_of is None:
                    w.copy_(soft_threshold(w32, lam_mlp) if roles.penalty == "l1"
                            else preferential_attachment_prox(w32, lam_mlp, roles.eps))
                    continue
                thr = lam_mlp * _as_step(step_of(w), w32)
                if roles.penalty != "l1":
                    thr = thr * pa_row_weight(w32, roles.eps).unsqueeze(1)
                w.copy_(soft_threshold(w32, thr))


def _fp32(w: Tensor) -> Tensor:
    """``w`` itself when it is fp32 or fp64, an fp32 copy otherwise."""
    return w if w.dtype in (torch.float32, torch.float64) else w.float()


def _as_step(step, w: Tensor) -> Tensor:
    if torch.is_tensor(step):
        return step.to(w.dtype).expand_as(w)
    return torch.full_like(w, float(step))


def zero_masks(weights: Sequence[Tensor]) -> List[Tensor]:
    return [w == 0 for w in weights]


def reapply_masks_(weights: Sequence[Tensor], masks: Sequence[Tensor]) -> None:
    """Keep zeros zero across an optimizer step (a mask whose matrix changed shape is skipped)."""
    with torch.no_grad():
        for w, m in zip(weights, masks):
            if m.shape == w.shape:
                w.masked_fill_(m, 0.0)


def sparsify_step_(roles: SparsifyRoles, lam_attn: float, lam_mlp: float, proximal: bool,
                   target: Optional[float], step_of: Optional[StepOf] = None) -> int:
    """After an optimizer step: the proximal step (if ``proximal``; ``step_of`` as in
    :func:`proximal_step_`), then the cut to the target (percent, or None): the ``cut`` mode.
    Returns the number of weights the cut zeroed."""
    if proximal:
        proximal_step_(roles, lam_attn, lam_mlp, step_of)
    if target is None or target <= 0:
        return 0
    present = sum(w.numel() for w in roles.counted)
    removed = max(roles.dense - present, 0)
    if not present:
        return 0
    share = max(target / 100.0 * (present + removed) - removed, 0.0) / present * 100.0
    with torch.no_grad():
        return sum(enforce_pool_(p, share) for p in roles.pools())
