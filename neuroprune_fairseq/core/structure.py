"""How much of a model's sparsity is *structure* (torch only, on sites).

The structures, and what removes them physically (``finalize`` / the HF save):

* heads (redundancy pruning, already removed during training);
* zeroed input groups: an input dimension j whose column is zero in all of a module's q, k, v
  (Eq. 2's group); more generally every all-zero input column of q, k, v or fc1 is gathered away;
* dead MLP neurons: an all-zero fc2 column, or an all-zero fc1 row (its constant folded into
  fc2's bias);
* zero output rows of fc2 and of the out projection: the layer computes only its live outputs.

:func:`structure_report` counts them on the model as it is (trained, or finalised: what was
removed counts as removed), the share of all zeros that sit in such structures (heads
included, and beyond heads), the MLP degree sd, and the share of 1x4 input blocks with at most
2 non-zeros (the N:M pattern the paper says its constraints encourage).
"""
from typing import Dict, Sequence

import torch
from torch import Tensor, nn

from .sites import AttentionSite, MlpSite
from .structured_linear import IN_INDEX, OUT_INDEX, full_in, full_out
from .topology import degree_stats, mlp_neuron_degrees


def block_nm_share(weights: Sequence[Tensor], m: int = 4, n: int = 2) -> float:
    """Share (percent) of the 1 x ``m`` blocks of consecutive input columns (within a row) that
    hold at most ``n`` non-zeros, over the given matrices (a row's last partial block is left
    out). 2:4 sparsity is 100% at ``m=4, n=2``."""
    good = total = 0
    for w in weights:
        cols = (w.shape[1] // m) * m
        if cols == 0:
            continue
        nz = (w.detach()[:, :cols] != 0).reshape(w.shape[0], cols // m, m).sum(-1)
        good += int((nz <= n).sum())
        total += nz.numel()
    return 100.0 * good / total if total else 0.0


def _live_cols(linear: nn.Linear) -> Tensor:
    """Live input columns of ``linear`` at its full input width (removed ones are dead)."""
    w = linear.weight.detach()
    live = (w != 0).any(0)
    idx = getattr(linear, IN_INDEX, None)
    if idx is None:
        return live
    full = torch.zeros(full_in(linear), dtype=torch.bool, device=w.device)
    full[idx] = live
    return full


def _dead_rows(linear: nn.Linear) -> int:
    """Output rows of ``linear`` that are all zero or removed."""
    return int((linear.weight.detach() == 0).all(1).sum()) + full_out(linear) - linear.weight.shape[0]


def _removable_zeros(w: Tensor, rows: bool, cols: bool) -> int:
    """Entries of ``w`` in an all-zero row (``rows``) or all-zero column (``cols``)."""
    z = w.detach() == 0
    mask = torch.zeros_like(z)
    if rows:
        mask |= z.all(1, keepdim=True).expand_as(z)
    if cols:
        mask |= z.all(0, keepdim=True).expand_as(z)
    return int(mask.sum())


def structure_report(attn: Sequence[AttentionSite], mlp: Sequence[MlpSite], dense_count: int,
                     present: int, zeros: int) -> Dict:
    """Structure figures of a model from its sites (all of them), its dense matrix-weight count
    and its present / zero counts (:func:`.policy.site_sparsity`)."""
    groups = zeroed_groups = 0
    head_weights = 0
    for s in attn:
        live = _live_cols(s.q) | _live_cols(s.k) | _live_cols(s.v)
        groups += live.numel()
        zeroed_groups += int((~live).sum())
        removed_heads = s.dense_heads - s.num_heads
        head_weights += removed_heads * s.head_dim * (full_in(s.q) + full_in(s.k) + full_in(s.v) + full_out(s.out))
    neurons = dead = removed_neurons = fc2_rows = fc2_rows_total = 0
    degrees = []
    for s in mlp:
        n_present = s.fc1[0].weight.shape[0]
        neurons += s.dense_dim
        removed_neurons += s.dense_dim - n_present
        dead_out = (s.fc2.weight.detach() == 0).all(0)
        dead_in = torch.stack([(f.weight.detach() == 0).all(1) for f in s.fc1]).all(0)
        dead += s.dense_dim - n_present + int((dead_out | dead_in).sum())
        fc2_rows += _dead_rows(s.fc2)
        fc2_rows_total += full_out(s.fc2)
        alive = ~(dead_out | dead_in)
        degrees.append(mlp_neuron_degrees([f.weight for f in s.fc1], s.fc2.weight, 0.0)[alive])
    structural = 0  # present zeros in removable structures
    for s in attn:
        for lin in (s.q, s.k, s.v):
            structural += _removable_zeros(lin.weight, rows=False, cols=True)
        structural += _removable_zeros(s.out.weight, rows=True, cols=False)
    for s in mlp:
        fc2 = s.fc2.weight.detach()
        dead_out = (fc2 == 0).all(0)
        dead_in = torch.stack([(f.weight.detach() == 0).all(1) for f in s.fc1]).all(0)
        dead_n = dead_out | dead_in
        for f in s.fc1:
            z = f.weight.detach() == 0
            mask = dead_n.unsqueeze(1).expand_as(z) | z.all(0, keepdim=True).expand_as(z)
            structural += int((mask & z).sum())
        z = fc2 == 0
        mask = dead_n.unsqueeze(0).expand_as(z) | z.all(1, keepdim=True).expand_as(z)
        structural += int((mask & z).sum())
    removed = dense_count - present
    sparse = removed + zeros
    ws = [w for s in attn for w in (s.q.weight, s.k.weight, s.v.weight, s.out.weight)]
    ws += [w for s in mlp for w in ([f.weight for f in s.fc1] + [s.fc2.weight])]
    deg = degree_stats(torch.cat(degrees)) if degrees else degree_stats(torch.zeros(0))
    return {
        "input_groups_zeroed": zeroed_groups,
        "input_groups": groups,
        "attention_modules_without_input": sum(1 for s in attn if not bool((_live_cols(s.q) | _live_cols(s.k) | _live_cols(s.v)).any())),
        "mlp_neurons_dead": dead,
        "mlp_neurons": neurons,
        "fc2_rows_zero": fc2_rows,
        "fc2_rows": fc2_rows_total,
        "structured_share": 100.0 * (removed + structural) / sparse if sparse else 0.0,
        "structured_share_beyond_heads": 100.0 * (removed - head_weights + structural) / sparse if sparse else 0.0,
        "mlp_degree_sd": deg["sd"],
        "blocks_1x4_at_most_2_nonzero": block_nm_share(ws),
    }


def format_structure(d: Dict) -> str:
    return (f"input groups zeroed {d['input_groups_zeroed']}/{d['input_groups']}, MLP neurons dead "
            f"{d['mlp_neurons_dead']}/{d['mlp_neurons']}, fc2 rows zero {d['fc2_rows_zero']}/{d['fc2_rows']}, "
            f"zeros in removed structures {d['structured_share']:.1f}% ({d['structured_share_beyond_heads']:.1f}% "
            f"beyond heads), MLP degree sd {d['mlp_degree_sd'] if d['mlp_degree_sd'] is None else round(d['mlp_degree_sd'], 2)}, "
            f"1x4 blocks with <= 2 non-zeros {d['blocks_1x4_at_most_2_nonzero']:.1f}%")
