"""Surgery: physically remove heads and neurons from ``nn.Linear`` modules.

In the style of Torch-Pruning, deciding what to prune (``redundancy.py``, ``head_target.py``),
scoring it and the surgery are separate: this module only executes a decision it is given (a
plan, or the heads / features to keep) and imports no decision-making; Algorithm 2 as a whole
(plan, then cut) is :func:`neuroprune_fairseq.core.policy.elim_redundant_`. The surgery slices
the gradient and the optimizer state together with the weight. Parameters keep their identity (``p.data`` is replaced, not ``p``), so an optimizer
or a (legacy) data-parallel wrapper that holds them keeps training the surviving slices.
"""
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # a plan is data the surgery reads; it does not make one
    from .redundancy import RedundancyPlan


def head_index(heads: Sequence[int], head_dim: int, device=None) -> Tensor:
    """Row (or column) indices owned by ``heads``: ``h*hd .. (h+1)*hd - 1`` for each."""
    idx = [h * head_dim + r for h in heads for r in range(head_dim)]
    return torch.tensor(idx, dtype=torch.long, device=device)


def _slice_param_(param: Tensor, dim: int, index: Tensor, optimizer: Optional[torch.optim.Optimizer]) -> None:
    old_shape = param.shape
    index = index.to(param.device)
    with torch.no_grad():
        param.data = param.data.index_select(dim, index).contiguous()
    if param.grad is not None:
        param.grad = param.grad.index_select(dim, index).contiguous()
    if optimizer is not None:
        state = optimizer.state.get(param)
        if state:
            for key, value in list(state.items()):
                if torch.is_tensor(value) and value.shape == old_shape:
                    state[key] = value.index_select(dim, index.to(value.device)).contiguous()


def prune_linear_(
    linear: nn.Linear, dim: int, keep: Tensor, optimizer: Optional[torch.optim.Optimizer] = None
) -> None:
    """Keep only ``keep`` output features (``dim=0``: weight rows and bias) or input
    features (``dim=1``: weight columns) of ``linear``, in place."""
    if dim not in (0, 1):
        raise ValueError("dim must be 0 (outputs) or 1 (inputs)")
    _slice_param_(linear.weight, dim, keep, optimizer)
    if dim == 0:
        if linear.bias is not None:
            _slice_param_(linear.bias, 0, keep, optimizer)
        linear.out_features = linear.weight.shape[0]
    else:
        linear.in_features = linear.weight.shape[1]


def pad_linear_(linear: nn.Linear, dim: int, size: int) -> None:
    """The inverse of :func:`prune_linear_` with zeros: grow ``linear``'s output features
    (``dim=0``: weight rows and bias) or input features (``dim=1``: weight columns) to ``size``,
    the new ones appended. Parameters keep their identity; not for use under a live optimizer."""
    if dim not in (0, 1):
        raise ValueError("dim must be 0 (outputs) or 1 (inputs)")
    n = linear.weight.shape[dim]
    if size < n:
        raise ValueError(f"cannot pad {n} features to {size}")
    params = [linear.weight] + ([linear.bias] if dim == 0 and linear.bias is not None else [])
    with torch.no_grad():
        for p in params:
            shape = list(p.shape)
            shape[dim] = size - n
            p.data = torch.cat([p.data, p.data.new_zeros(shape)], dim)
    if dim == 0:
        linear.out_features = size
    else:
        linear.in_features = size


def pad_heads_(q: nn.Linear, k: nn.Linear, v: nn.Linear, out: nn.Linear, head_dim: int, num_heads: int) -> None:
    """The inverse of :func:`prune_heads_` with zeros: append heads with zero q/k/v rows (and
    biases) and zero out-projection columns up to ``num_heads``. They attend uniformly to zero
    values and are read by zero columns: the module computes the same function."""
    for lin in (q, k, v):
        pad_linear_(lin, 0, num_heads * head_dim)
    pad_linear_(out, 1, num_heads * head_dim)


def merge_heads_into_representatives_(out_weight: Tensor, head_dim: int, rep: Sequence[int]) -> None:
    """ELIM_REDUNDANT's merge: ``out[:, cols(rep[i])] += out[:, cols(i)]`` for removed ``i``.

    ``rep`` must be resolved (every ``rep[i]`` represents itself): nothing is merged into
    a head that is removed too.
    """
    with torch.no_grad():
        for i, j in enumerate(rep):
            if j == i:
                continue
            if rep[j] != j:
                raise ValueError(f"head {i} is merged into head {j}, which is removed too")
            out_weight[:, j * head_dim:(j + 1) * head_dim] += out_weight[:, i * head_dim:(i + 1) * head_dim]


def prune_heads_(
    q: nn.Linear,
    k: nn.Linear,
    v: nn.Linear,
    out: nn.Linear,
    head_dim: int,
    keep_heads: Sequence[int],
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> None:
    """Remove every head not in ``keep_heads``: its q/k/v rows (and biases) and its
    out-projection columns."""
    if not keep_heads:
        raise ValueError("refusing to remove every head of an attention module")
    idx = head_index(sorted(keep_heads), head_dim, q.weight.device)
    for lin in (q, k, v):
        prune_linear_(lin, 0, idx, optimizer)
    prune_linear_(out, 1, idx, optimizer)


def zero_heads_(q: nn.Linear, k: nn.Linear, v: nn.Linear, out: nn.Linear, head_dim: int, heads: Sequence[int]) -> None:
    """Zero the q/k/v rows (and biases) and out-projection columns of ``heads``: they stay
    in place but contribute nothing (a module's only head, kept as a placeholder)."""
    idx = head_index(heads, head_dim, q.weight.device)
    with torch.no_grad():
        for lin in (q, k, v):
            lin.weight[idx] = 0
            if lin.bias is not None:
                lin.bias[idx] = 0
        out.weight[:, idx] = 0


def apply_redundancy_plan_(
    q: nn.Linear,
    k: nn.Linear,
    v: nn.Linear,
    out: nn.Linear,
    plan: "RedundancyPlan",
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> None:
    """ELIM_REDUNDANT's second half for a decided ``plan`` (e.g. from
    :func:`neuroprune_fairseq.core.head_target.plan_target_heads`): merge every removed
    head's out-projection columns into its representative, then remove it physically.
    The caller updates its module's head count to ``len(plan.keep)``."""
    if not plan.removed:
        return
    if q.weight.shape[0] % plan.num_heads:
        raise ValueError(f"q has {q.weight.shape[0]} rows, not a multiple of the plan's {plan.num_heads} heads")
    head_dim = q.weight.shape[0] // plan.num_heads
    merge_heads_into_representatives_(out.weight.data, head_dim, plan.rep)
    prune_heads_(q, k, v, out, head_dim, plan.keep, optimizer)


def resize_linear_(linear: nn.Linear, out_features: int, in_features: int) -> None:
    """Give ``linear`` fresh (uninitialised) parameters of a new shape, to load a pruned
    state dict into a dense-built module. Not for use under a live optimizer."""
    if linear.weight.shape == (out_features, in_features):
        return
    w = linear.weight
    linear.weight = nn.Parameter(w.new_empty(out_features, in_features), requires_grad=w.requires_grad)
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.new_empty(out_features), requires_grad=linear.bias.requires_grad)
    linear.out_features, linear.in_features = out_features, in_features


def remove_dead_neurons_(
    fc1: nn.Linear,
    fc2: nn.Linear,
    activation: Callable[[Tensor], Tensor],
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> List[int]:
    """Remove MLP neurons that cannot influence the output; returns the kept neuron ids.

    * fc2 column all zero: the neuron's output is never read, remove it.
    * fc1 row all zero: the neuron outputs the constant ``act(b1[i])``; fold
      ``fc2[:, i] * act(b1[i])`` into fc2's bias and remove it (kept when fc2 has no bias
      and that constant is non-zero).
    Exact for an MLP ``fc2(act(fc1(x)))`` in eval mode (dropout off).
    """
    with torch.no_grad():
        w1, w2 = fc1.weight.data, fc2.weight.data
        dead_out = (w2 == 0).all(dim=0)
        dead_in = (w1 == 0).all(dim=1) & ~dead_out
        if dead_in.any():
            b1 = fc1.bias.data[dead_in] if fc1.bias is not None else w1.new_zeros(int(dead_in.sum()))
            const = activation(b1)
            contribution = w2[:, dead_in] @ const
            if fc2.bias is not None:
                fc2.bias.data += contribution
            elif bool((const != 0).any()):
                dead_in &= False  # cannot fold: keep them
    keep = (~(dead_out | dead_in)).nonzero().flatten()
    if keep.numel() == 0:  # keep one silent neuron so shapes stay valid
        keep = torch.zeros(1, dtype=torch.long, device=fc1.weight.device)
        with torch.no_grad():
            fc2.weight.data[:, 0] = 0  # its constant, if any, is already in fc2's bias
    if keep.numel() < fc1.weight.shape[0]:
        prune_linear_(fc1, 0, keep, optimizer)
        prune_linear_(fc2, 1, keep, optimizer)
    return keep.tolist()
