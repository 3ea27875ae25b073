"""NeuroPrune's policy over the sites of a model, written once for every adapter (torch only):
which penalty is summed over which sites, redundancy pruning of every attention module, head
counts, the dense weight count and the honest sparsity, and the per-module report line.

Every function here takes site lists (:mod:`neuroprune_fairseq.core.sites`); the names say so
where a model-level method of the facade (:mod:`neuroprune_fairseq.core.facade`) does the same on
a model: ``prune_sites_`` / ``prune_redundant_heads_``, ``site_head_counts`` / ``head_counts``,
``site_matrices`` / ``matrices``, ``site_dense_count`` / ``dense_matrix_count``, ``site_sparsity``
/ ``sparsity``, ``pad_sites_to_dense_`` / ``pad_to_dense_``. Redundancy pruning is a plan
(:func:`plan_sites`, made by :mod:`.redundancy`), then the surgery that executes it
(:func:`apply_site_plans_`, :mod:`.surgery`).
"""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .penalties import attention_group_penalty, l1_penalty, mlp_preferential_attachment_penalty, preferential_attachment_l1
from .redundancy import RedundancyPlan, head_distance_matrix, min_pair_distance, plan_redundant_heads
from .sites import AttentionSite, MlpSite
from .sparsity import SparsityReport, sparsity_report
from .structured_linear import full_in, full_out
from .surgery import apply_redundancy_plan_, pad_heads_, pad_linear_, prune_heads_

PENALTIES = ("neuroprune", "l1", "none")


def penalties(
    attn: Sequence[AttentionSite], mlp: Sequence[MlpSite], eps: float, penalty: str, zero: Tensor
) -> Tuple[Tensor, Tensor]:
    """``(sum_l R_attn, sum_l R_mlp)`` over the given sites; the caller weighs them by alpha, beta.

    ``penalty="neuroprune"``: Eq. 2 per attention module and Eq. 1 per MLP block (a gated MLP
    counts both fc1 halves: ``PA(fc1_gate) + PA(fc1_linear) + PA(fc2)``). ``"l1"``: the paper's
    baseline, plain L1 of all q, k, v weights (first value) and of all fc1, fc2 weights (second).
    ``"none"``: zeros. ``zero``: the scalar the sums start from (its dtype and device).
    """
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")
    if penalty == "none":
        return zero, zero
    if penalty == "l1":
        r_attn = l1_penalty(w for s in attn for w in (s.q.weight, s.k.weight, s.v.weight)) if attn else zero
        r_mlp = l1_penalty(w for s in mlp for w in (*[f.weight for f in s.fc1], s.fc2.weight)) if mlp else zero
        return r_attn, r_mlp
    r_attn = sum((attention_group_penalty(s.q.weight, s.k.weight, s.v.weight) for s in attn), zero)
    r_mlp = zero
    for s in mlp:
        r_mlp = r_mlp + mlp_preferential_attachment_penalty(s.fc1[0].weight, s.fc2.weight, eps)
        for extra in s.fc1[1:]:
            r_mlp = r_mlp + preferential_attachment_l1(extra.weight, eps)
    return r_attn, r_mlp


# --------------------------------------------------------------------------- heads
class HeadPruneResult(NamedTuple):
    """What redundancy pruning did to one attention module (``name, plan = result[:2]``)."""

    name: str
    plan: RedundancyPlan
    kind: str
    kept_original: List[int]  # original indices of the heads kept after this pass
    before_original: Optional[List[int]] = None  # original indices of the heads before it

    def line(self) -> str:
        """One log line; heads are named by their original (dense) indices throughout."""
        p = self.plan
        o = self.before_original or list(range(p.num_heads))
        merged = ",".join(f"{o[i]}->{o[p.rep[i]]}" for i in p.removed) or "-"
        return (f"{self.name} [{self.kind}]: heads {p.num_heads}->{len(p.keep)} kept={self.kept_original} "
                f"merged={merged} min_dist={p.min_distance:.4f} theta={p.theta:g}")


def format_results(results: Sequence[HeadPruneResult]) -> str:
    return "\n".join("  " + r.line() for r in results)


def elim_redundant_(
    q: nn.Linear,
    k: nn.Linear,
    v: nn.Linear,
    out: nn.Linear,
    num_heads: int,
    theta: float,
    method: str = "heuristic",
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> RedundancyPlan:
    """Algorithm 2 (ELIM_REDUNDANT) on one attention module, in place: the decision
    (:func:`neuroprune_fairseq.core.redundancy.plan_redundant_heads`: similar heads, a dominating
    set), then the surgery (:func:`neuroprune_fairseq.core.surgery.apply_redundancy_plan_`: each
    removed head's out-projection columns merged into its representative, then removed). The
    caller must update its module's head count to ``len(plan.keep)``."""
    plan = plan_redundant_heads(q.weight, k.weight, v.weight, num_heads, theta, method)
    apply_redundancy_plan_(q, k, v, out, plan, optimizer)
    return plan


def plan_sites(sites: Sequence[AttentionSite], theta: float, method: str = "heuristic") -> List[RedundancyPlan]:
    """Algorithm 2's decision for every site, on its current weights (nothing is changed)."""
    return [plan_redundant_heads(s.q.weight, s.k.weight, s.v.weight, s.num_heads, theta, method) for s in sites]


def prune_sites_(
    sites: Sequence[AttentionSite],
    theta: float,
    method: str = "heuristic",
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> List[HeadPruneResult]:
    """ELIM_REDUNDANT (Algorithm 2) on every site: heads whose [Q,K,V] blocks are within
    l_inf ``theta`` are merged into a dominating set (a removed head's out columns are added to
    its representative's) and physically removed, the optimizer's state sliced with the
    weights. One result per module, with its smallest head distance (so a pass that prunes
    nothing says why). The plans (:func:`plan_sites`), then the surgery (:func:`apply_site_plans_`)."""
    return apply_site_plans_(sites, plan_sites(sites, theta, method), optimizer)


def apply_site_plans_(
    sites: Sequence[AttentionSite],
    plans: Sequence[RedundancyPlan],
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> List[HeadPruneResult]:
    """Algorithm 2's merge + physical removal for decided plans, one per site (from
    :func:`plan_sites`, or a head budget's :func:`neuroprune_fairseq.core.head_target.plan_target_heads`)."""
    results = []
    for site, plan in zip(sites, plans):
        site.mark_dense_()
        before = site.kept_heads
        apply_redundancy_plan_(site.q, site.k, site.v, site.out, plan, optimizer)
        if plan.removed:
            site.set_kept_heads_([before[h] for h in plan.keep])
        results.append(HeadPruneResult(site.name, plan, site.kind, site.kept_heads, before))
    return results


def prune_site_heads_(site: AttentionSite, keep: Sequence[int], optimizer: Optional[torch.optim.Optimizer] = None) -> None:
    """Keep only the heads ``keep`` (current indices) of one attention module; no merge."""
    keep = sorted(set(int(h) for h in keep))
    if keep == list(range(site.num_heads)):
        return
    current = site.kept_heads
    site.mark_dense_()
    prune_heads_(site.q, site.k, site.v, site.out, site.head_dim, keep, optimizer)
    site.set_kept_heads_([current[h] for h in keep])


def pad_sites_to_dense_(attn: Sequence[AttentionSite], mlp: Sequence[MlpSite]) -> Dict[str, int]:
    """Undo the physical removal with zeros: every attention module back to its dense head
    count (the removed heads appended with zero q/k/v rows and out columns), every MLP block
    back to its dense width (zero fc1 rows and biases, zero fc2 columns). Same function in eval
    mode, at the dense cost ("masked" pruning); removed input columns / output rows
    (:mod:`.structured_linear`) come back as zeros too. Returns how many modules, blocks and
    structured layers were padded."""
    from .structured_linear import unstructure_linear_

    padded = {"attention_modules": 0, "mlp_blocks": 0, "structured_linears": 0}
    for lin in [lin for s in attn for lin in (s.q, s.k, s.v, s.out)] + [f for s in mlp for f in (*s.fc1, s.fc2)]:
        padded["structured_linears"] += unstructure_linear_(lin)
    for s in attn:
        dense, n = s.dense_heads, s.num_heads
        if n < dense:
            s.mark_dense_()
            kept = s.kept_heads
            pad_heads_(s.q, s.k, s.v, s.out, s.head_dim, dense)
            s.set_kept_heads_(kept + [h for h in range(dense) if h not in kept])  # original index per position
            padded["attention_modules"] += 1
    for s in mlp:
        dense = s.dense_dim
        if s.fc1[0].out_features < dense:
            for f in s.fc1:
                pad_linear_(f, 0, dense)
            pad_linear_(s.fc2, 1, dense)
            padded["mlp_blocks"] += 1
    return padded


def site_head_counts(sites: Sequence[AttentionSite]) -> List[int]:
    """Heads present in every attention module, in model order."""
    return [s.num_heads for s in sites]


def min_head_distances(sites: Sequence[AttentionSite]) -> Dict[str, float]:
    """Smallest l_inf [Q,K,V] distance between two heads, per attention module."""
    return {s.name: min_pair_distance(head_distance_matrix(s.q.weight, s.k.weight, s.v.weight, s.num_heads))
            for s in sites}


# --------------------------------------------------------------------------- weights
def site_matrices(attn: Sequence[AttentionSite], mlp: Sequence[MlpSite]) -> List[Tensor]:
    """The attention (q, k, v, out) and MLP (fc1[, fc1 gate], fc2) weight matrices."""
    ws = []
    for s in attn:
        ws.extend([s.q.weight, s.k.weight, s.v.weight, s.out.weight])
    for s in mlp:
        ws.extend([f.weight for f in s.fc1] + [s.fc2.weight])
    return ws


def site_dense_count(attn: Sequence[AttentionSite], mlp: Sequence[MlpSite]) -> int:
    """How many weights those matrices held in the dense model (before any head or neuron
    was removed)."""
    total = 0
    for s in attn:
        d_attn = s.dense_heads * s.head_dim
        total += d_attn * (full_in(s.q) + full_in(s.k) + full_in(s.v)) + full_out(s.out) * d_attn
    for s in mlp:
        total += s.dense_dim * (sum(full_in(f) for f in s.fc1) + full_out(s.fc2))
    return total


def site_sparsity(attn: Sequence[AttentionSite], mlp: Sequence[MlpSite]) -> SparsityReport:
    """Share of the attention + MLP matrices that is exactly zero or removed (``.sparsity`` %)."""
    return sparsity_report(site_matrices(attn, mlp), site_dense_count(attn, mlp))


def sparsify_roles(attn: Sequence[AttentionSite], mlp: Sequence[MlpSite], attn_all: Sequence[AttentionSite],
                   mlp_all: Sequence[MlpSite], penalty: str, eps: float):
    """What the proximal step and the target-sparsity enforcement (:mod:`.target`) act on: the
    penalised sites' [Q, K, V] and (fc1, fc2) weights, and every site's matrices for the count."""
    from .target import SparsifyRoles

    return SparsifyRoles(
        attn=[(s.q.weight, s.k.weight, s.v.weight) for s in attn],
        mlp=[([f.weight for f in s.fc1], s.fc2.weight) for s in mlp],
        counted=site_matrices(attn_all, mlp_all), dense=site_dense_count(attn_all, mlp_all), penalty=penalty, eps=eps)


# --------------------------------------------------------------------------- structure
def structure(attn: Sequence[AttentionSite], mlp: Sequence[MlpSite]) -> Dict:
    """:func:`neuroprune_fairseq.core.structure.structure_report` of the model these sites make."""
    from .structure import structure_report

    rep = site_sparsity(attn, mlp)
    return structure_report(attn, mlp, rep.dense, rep.present, rep.zero)


def remove_structure_(attn: Sequence[AttentionSite], mlp: Sequence[MlpSite]) -> Dict[str, int]:
    """Physically remove the zeroed structure beyond heads and dead neurons (run
    :func:`neuroprune_fairseq.core.surgery.remove_dead_neurons_` first): every all-zero input
    column of q, k, v and fc1 (a gather) and every all-zero output row of the out projection and
    fc2 (a scatter), :func:`neuroprune_fairseq.core.structured_linear.structure_linear_`. Same
    outputs. Returns how many input columns and output rows were removed."""
    from .structured_linear import structure_linear_

    total = {"inputs": 0, "outputs": 0}
    for lin, inputs in [(lin, True) for s in attn for lin in (s.q, s.k, s.v)] + [(s.out, False) for s in attn] \
            + [(f, True) for s in mlp for f in s.fc1] + [(s.fc2, False) for s in mlp]:
        for k, v in structure_linear_(lin, inputs=inputs, outputs=not inputs).items():
            total[k] += v
    return total


def remove_unread_neurons_(mlp: Sequence[MlpSite]) -> int:
    """Remove the MLP neurons whose fc2 column is all zero (their output is never read: exact
    for any activation, gated or not); records the dense width on the block. Returns how many."""
    from .surgery import prune_linear_

    removed = 0
    for s in mlp:
        dense = s.dense_dim
        live = (s.fc2.weight.detach() != 0).any(0)
        if bool(live.all()):
            continue
        keep = live.nonzero().flatten()
        if keep.numel() == 0:
            keep = torch.zeros(1, dtype=torch.long, device=live.device)
        for f in s.fc1:
            prune_linear_(f, 0, keep)
        prune_linear_(s.fc2, 1, keep)
        s.module._np_dense_dim = dense
        removed += live.numel() - keep.numel()
    return removed
