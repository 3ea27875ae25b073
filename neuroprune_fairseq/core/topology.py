"""The topology the paper shows (Fig. 1-3, 8-10), torch only.

PyTorch layout, as everywhere in ``core``: ``fc1`` is ``[d_e, d]`` (a row per MLP neuron),
``fc2`` is ``[d, d_e]`` (a column per MLP neuron); ``q/k/v`` are ``[d_attn, d]`` (an input
dimension is a column, head h owns rows ``h*hd:(h+1)*hd``), ``out`` is ``[d, d_attn]`` (head h
owns columns ``h*hd:(h+1)*hd``).

* :func:`mlp_neuron_degrees` -- a neuron's degree: its connections with ``|w| >= eps``
* :func:`degree_stats`       -- mean, sd, min, max and the exact histogram of degrees
* :func:`zero_rows`, :func:`zero_cols` -- rows / columns of a matrix that are exactly zero
* :func:`zero_input_groups`  -- Eq. 2's groups (columns of [Q;K;V]) that are exactly zero
* :func:`dead_mlp_neurons`   -- the neurons ``finalize`` removes (no input or no output)
* :func:`zeroed_heads`       -- heads whose q, k, v rows and out columns are all zero
* :func:`active_head_count`  -- the heads present that are not zeroed: what "heads kept" counts
"""
from typing import Dict, List, Sequence, Union

import torch
from torch import Tensor

Matrices = Union[Tensor, Sequence[Tensor]]


def _as_list(ws: Matrices) -> List[Tensor]:
    return [ws] if isinstance(ws, Tensor) else list(ws)


def mlp_neuron_degrees(fc1: Matrices, fc2: Tensor, eps: float) -> Tensor:
    """Degree of every MLP neuron i: the entries with ``|w| >= eps`` in row i of ``fc1`` plus
    column i of ``fc2`` (a gated MLP passes its two input matrices as ``fc1``; both count).

    With ``eps = 0`` every nonzero entry counts. Returns a ``long`` tensor of length ``d_e``.
    """
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    fc1 = _as_list(fc1)
    d_e = fc2.shape[1]
    if any(w.dim() != 2 or w.shape[0] != d_e for w in fc1) or fc2.dim() != 2:
        raise ValueError(f"fc1 must be [d_e, d] and fc2 [d, d_e]; got {[tuple(w.shape) for w in fc1]} and {tuple(fc2.shape)}")

    def connected(w: Tensor) -> Tensor:
        a = w.detach().abs()
        return a >= eps if eps > 0 else a > 0

    deg = connected(fc2).sum(dim=0)
    for w in fc1:
        deg = deg + connected(w).sum(dim=1)
    return deg.long()


def degree_stats(degrees: Tensor) -> Dict:
    """``n, mean, sd, min, max`` and the exact histogram (``degree`` values with their
    ``count``). ``sd`` is the population standard deviation (divides by n): the spread of
    the degrees of the neurons that are there, not an estimate for a larger population."""
    d = degrees.detach().flatten().to(torch.float64)
    if d.numel() == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "max": None, "histogram": {"degree": [], "count": []}}
    values, counts = torch.unique(degrees.detach().flatten().long(), return_counts=True)
    return {
        "n": int(d.numel()),
        "mean": float(d.mean()),
        "sd": float(d.std(unbiased=False)),
        "min": int(d.min()),
        "max": int(d.max()),
        "histogram": {"degree": values.tolist(), "count": counts.tolist()},
    }


def zero_rows(w: Tensor) -> List[int]:
    """Indices of the rows of ``w`` whose entries are all exactly zero."""
    return (w.detach() == 0).all(dim=1).nonzero().flatten().tolist()


def zero_cols(w: Tensor) -> List[int]:
    """Indices of the columns of ``w`` whose entries are all exactly zero."""
    return (w.detach() == 0).all(dim=0).nonzero().flatten().tolist()


def zero_input_groups(q: Tensor, k: Tensor, v: Tensor, eps: float = 0.0) -> List[int]:
    """Eq. 2's groups that are off: input dimensions j whose column of ``[Q; K; V]`` is all
    exactly zero (``eps = 0``) or all below ``eps`` in absolute value (``eps > 0``)."""
    a = torch.cat([q.detach(), k.detach(), v.detach()], dim=0).abs()
    off = (a == 0) if eps == 0 else (a < eps)
    return off.all(dim=0).nonzero().flatten().tolist()


def dead_mlp_neurons(fc1: Matrices, fc2: Tensor) -> List[int]:
    """Neurons that cannot carry a signal: column i of ``fc2`` is all zero (the output is never
    read) or row i of every ``fc1`` matrix is all zero (a constant, folded into fc2's bias by
    ``remove_dead_neurons_``). What ``finalize`` removes (for an MLP with fc2 bias)."""
    dead = (fc2.detach() == 0).all(dim=0)
    no_in = torch.ones_like(dead)
    for w in _as_list(fc1):
        no_in &= (w.detach() == 0).all(dim=1)
    return (dead | no_in).nonzero().flatten().tolist()


def zeroed_heads(q: Tensor, k: Tensor, v: Tensor, out: Tensor, head_dim: int) -> List[int]:
    """Heads (current positions) whose q, k and v rows and out columns are all exactly zero:
    present but contributing at most a constant through the biases (e.g. the placeholder a
    module keeps when every head was pruned)."""
    rows = q.shape[0]
    if rows % head_dim or k.shape[0] != rows or v.shape[0] != rows or out.shape[1] != rows:
        raise ValueError(f"q/k/v rows and out columns must be equal multiples of head_dim {head_dim}")
    n = rows // head_dim
    z = torch.stack([(w.detach() == 0).all(dim=1) for w in (q, k, v)] + [(out.detach() == 0).all(dim=0)]).all(dim=0)
    return [h for h in range(n) if bool(z[h * head_dim:(h + 1) * head_dim].all())]


def active_head_count(q: Tensor, k: Tensor, v: Tensor, out: Tensor, head_dim: int) -> int:
    """Heads present in the module that are not :func:`zeroed_heads`: any non-zero q/k/v row or
    out column. What every report's "heads kept" counts (a zeroed placeholder head counts 0)."""
    return q.shape[0] // head_dim - len(zeroed_heads(q, k, v, out, head_dim))
