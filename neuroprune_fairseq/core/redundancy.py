"""Redundant-head detection: head similarity (Alg. 2), FIND_DOMINATING (Alg. 3), and an
exact minimum dominating set.

A head ``h`` of an attention module owns rows ``h*hd:(h+1)*hd`` of the q, k and v weights;
its block ``B_h`` is those rows stacked, ``[3 * hd, d]``.
"""
import itertools
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch
from torch import Tensor

#: modules with more heads than this refuse ``method="exact"`` (the search is exponential)
EXACT_MAX_HEADS = 24


def head_blocks(q_weight: Tensor, k_weight: Tensor, v_weight: Tensor, num_heads: int) -> Tensor:
    """``[num_heads, 3 * hd * d]``: each head's rows of q, k, v, flattened."""
    rows = q_weight.shape[0]
    if rows % num_heads or k_weight.shape[0] != rows or v_weight.shape[0] != rows:
        raise ValueError(
            f"q/k/v have {q_weight.shape[0]}/{k_weight.shape[0]}/{v_weight.shape[0]} rows, "
            f"not a multiple of num_heads={num_heads}"
        )
    hd = rows // num_heads
    parts = [w.detach().reshape(num_heads, hd * w.shape[1]) for w in (q_weight, k_weight, v_weight)]
    return torch.cat(parts, dim=1)


def head_distance_matrix(q_weight: Tensor, k_weight: Tensor, v_weight: Tensor, num_heads: int) -> Tensor:
    """``D[i, j] = max |B_i - B_j|`` (the l_inf distance of Algorithm 2), float64 on CPU."""
    blocks = head_blocks(q_weight, k_weight, v_weight, num_heads).float()
    dist = torch.zeros(num_heads, num_heads, dtype=torch.float64)
    for i in range(num_heads):  # one row at a time: H x H x n would not fit for big models
        dist[i] = (blocks - blocks[i]).abs().amax(dim=1).double().cpu()
    return dist


def pair_distances(distance: Tensor) -> Tensor:
    """The distances of all pairs of different heads (upper triangle of ``distance``)."""
    h = distance.shape[0]
    return distance[torch.triu(torch.ones(h, h, dtype=torch.bool), diagonal=1)]


def min_pair_distance(distance: Tensor) -> float:
    """The smallest distance between two different heads (what theta must reach for anything
    to be pruned); ``inf`` for a module of one head."""
    return float(pair_distances(distance).min()) if distance.shape[0] > 1 else float("inf")


def similarity_matrix(distance: Tensor, theta: float) -> Tensor:
    """``S[i, j] = 1{l_inf(B_i, B_j) <= theta}``, ``S[i, i] = 1`` (bool ``[k, k]``)."""
    sim = distance <= theta
    sim.fill_diagonal_(True)
    return sim


def find_dominating(similarity: Tensor) -> List[int]:
    """Algorithm 3 (FIND_DOMINATING) exactly as the paper writes it, 0-indexed.

    Returns ``rep`` with ``rep[i] = j*``: head ``i`` can be replaced by head ``j*``
    (``D[i, j*] = 1``); ``rep[i] == i`` means kept by this pass. For each ``i``, ``j*`` starts
    at ``i`` and moves to ``j`` when ``N(j*)`` is a strict subset of ``N(j)``, or when
    ``N(j*) == N(j)`` and ``j* < j`` (the bias towards keeping later heads).
    Chains (``rep[rep[i]] != rep[i]``) are possible: see :func:`resolve_representatives`.
    """
    sim = similarity.to(torch.int8)
    k = sim.shape[0]
    rep = []
    for i in range(k):
        best = i
        for j in range(k):
            s = sim[best] - sim[j]
            if (not bool((s == 1).any()) and bool((s == -1).any())) or (not bool(s.any()) and best < j):
                best = j
        rep.append(best)
    return rep


def resolve_representatives(rep: Sequence[int]) -> List[int]:
    """Follow ``i -> rep[i] -> rep[rep[i]] ...`` to a head that represents itself.

    The paper leaves chains unspecified; resolving them means no weight is merged into a
    head that is itself removed. Algorithm 3's moves are strictly increasing in
    (neighbourhood inclusion, index), so chains end; a cycle is reported as a bug.
    """
    resolved = []
    for i in range(len(rep)):
        seen = {i}
        j = rep[i]
        while rep[j] != j:
            if j in seen:
                raise RuntimeError(f"representative cycle through head {j}: {list(rep)}")
            seen.add(j)
            j = rep[j]
        resolved.append(j)
    return resolved


def _min_dominating_set(nbr_masks: List[int], nodes: List[int]) -> List[int]:
    """Smallest subset of ``nodes`` whose closed neighbourhoods cover ``nodes``.

    Candidates are tried in lexicographic order of the *reversed* node list, so among
    minimum sets the one of latest heads wins (the paper's bias). Exponential: small k only.
    """
    full = 0
    for n in nodes:
        full |= 1 << n
    order = sorted(nodes, reverse=True)
    for size in range(1, len(nodes) + 1):
        for combo in itertools.combinations(order, size):
            cover = 0
            for n in combo:
                cover |= nbr_masks[n]
            if cover & full == full:
                return sorted(combo)
    return sorted(nodes)  # unreachable: all nodes dominate themselves


def find_dominating_exact(similarity: Tensor, distance: Optional[Tensor] = None) -> List[int]:
    """A *minimum* dominating set of the similarity graph, as a representative list.

    Solved per connected component (exact, exponential in the component size; modules of
    up to :data:`EXACT_MAX_HEADS` heads). Each removed head is represented by its most
    similar kept neighbour (smallest distance when ``distance`` is given, later head on
    ties), so ``rep[rep[i]] == rep[i]`` always.
    """
    sim = similarity.bool()
    k = sim.shape[0]
    if k > EXACT_MAX_HEADS:
        raise ValueError(
            f"exact dominating set is limited to {EXACT_MAX_HEADS} heads per module, got {k}; "
            "use the paper's heuristic (method='heuristic')"
        )
    masks = [sum(1 << j for j in range(k) if sim[i, j]) for i in range(k)]
    unvisited = set(range(k))
    kept: List[int] = []
    while unvisited:
        start = unvisited.pop()
        comp, frontier = {start}, [start]
        while frontier:
            n = frontier.pop()
            for m in range(k):
                if sim[n, m] and m not in comp:
                    comp.add(m)
                    frontier.append(m)
        unvisited -= comp
        kept.extend(_min_dominating_set(masks, sorted(comp)))
    kept_set = set(kept)
    rep = []
    for i in range(k):
        if i in kept_set:
            rep.append(i)
            continue
        cands = [j for j in kept_set if sim[i, j]]
        if distance is not None:
            rep.append(min(cands, key=lambda j: (float(distance[i, j]), -j)))
        else:
            rep.append(max(cands))
    return rep


@dataclass
class RedundancyPlan:
    """What ELIM_REDUNDANT decided for one attention module."""

    num_heads: int
    rep: List[int]  # resolved: rep[i] is a kept head similar to i; rep[i] == i iff kept
    min_distance: float  # smallest off-diagonal l_inf head distance (inf for one head)
    theta: float

    @property
    def keep(self) -> List[int]:
        return [i for i, r in enumerate(self.rep) if r == i]

    @property
    def removed(self) -> List[int]:
        return [i for i, r in enumerate(self.rep) if r != i]


def plan_from_distance(distance: Tensor, theta: float, method: str = "heuristic") -> RedundancyPlan:
    """Algorithm 2 up to the merge, on a precomputed head distance matrix ``[k, k]`` (as
    :func:`head_distance_matrix` returns): similarity at ``theta``, then a dominating set
    (the paper's heuristic or an exact minimum one). A ``theta`` below every distance
    (e.g. ``-1``) makes no pair similar and keeps every head."""
    if method not in ("heuristic", "exact"):
        raise ValueError(f"method must be 'heuristic' or 'exact', got {method!r}")
    num_heads = distance.shape[0]
    min_dist = min_pair_distance(distance)
    sim = similarity_matrix(distance, theta)
    if num_heads == 1 or not bool((sim & ~torch.eye(num_heads, dtype=torch.bool)).any()):
        return RedundancyPlan(num_heads, list(range(num_heads)), min_dist, theta)
    if method == "exact":
        rep = find_dominating_exact(sim, distance)
    else:
        rep = resolve_representatives(find_dominating(sim))
    return RedundancyPlan(num_heads, rep, min_dist, theta)


def plan_redundant_heads(
    q_weight: Tensor,
    k_weight: Tensor,
    v_weight: Tensor,
    num_heads: int,
    theta: float,
    method: str = "heuristic",
    distance: Optional[Tensor] = None,
) -> RedundancyPlan:
    """Algorithm 2 up to the merge: similarity, then a dominating set (heuristic or exact).

    ``distance``: the module's head distance matrix if already computed (it is not
    recomputed; e.g. a search over theta on the same weights)."""
    if method not in ("heuristic", "exact"):
        raise ValueError(f"method must be 'heuristic' or 'exact', got {method!r}")
    if distance is None:
        distance = head_distance_matrix(q_weight, k_weight, v_weight, num_heads)
    elif tuple(distance.shape) != (num_heads, num_heads):
        raise ValueError(f"distance matrix of shape {tuple(distance.shape)} for {num_heads} heads")
    return plan_from_distance(distance, theta, method)
