"""A head budget reached by redundancy pruning (``--np-target-heads K``), torch only.

The paper's pruning keeps whatever the threshold theta leaves; it "does not allow the user
to specify the exact number of heads". Here the heads are still removed by redundancy with
Algorithm 2's merge, but each pruning epoch chooses theta so that a scheduled count is kept:

1. **Schedule** (:func:`scheduled_heads`): at pruning epoch ``e`` with ``n`` heads, the count
   goes linearly over the pruning epochs left up to the target epoch ``E``: with ``r``
   pruning epochs in ``[e, E]``, keep ``K + floor((n - K) (r - 1) / r)``; ``K`` at ``E`` and
   after. Re-planned from the current count each epoch (stateless: resumable, identical on
   every data-parallel worker).
2. **Threshold** (:func:`choose_theta`): the kept count only changes at the distances between
   heads, so theta is chosen among them (plus ``-1``: nothing similar) by bisection: the
   largest candidate whose dominating sets keep at least the scheduled count (the paper's
   Algorithm 3, or an exact minimum dominating set). The distance matrices are computed once
   per epoch and shared by every evaluation.
3. **Closest-first completion** (:func:`complete_closest_first`): the dominating sets jump by
   more than one head between two candidate thetas; the heads still over the count are merged
   one at a time, the pair of kept heads at the smallest distance first (in the same module:
   a head can only be merged into a head of its own module). Of the pair, the head that
   represents fewer others is removed (then the lower index, Algorithm 3's bias towards later
   heads); whatever it represented moves with it, so every removed head is merged into a head
   that is kept. A module never drops below one head.

``per_module=True`` applies the same policy to each module on its own (one theta per module,
target per module) instead of one global theta and one budget over the whole model.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .redundancy import RedundancyPlan, plan_from_distance

NO_THETA = -1.0  # a threshold below every distance: nothing is similar, every head is kept


def pruning_epochs(start: int, every: int, last: int) -> List[int]:
    """The epochs after which pruning runs, up to ``last``: ``start, start + every, ...``."""
    return list(range(start, last + 1, every)) if last >= start else []


def check_target_epoch(target_epoch: int, start: int, every: int, max_epoch: int = 0) -> int:
    """The epoch by which the budget must be reached: ``target_epoch`` if given (> 0), else the
    last pruning epoch of the run (``max_epoch``). Errors name the problem and the fix."""
    if target_epoch <= 0:
        if max_epoch <= 0:
            raise ValueError("--np-target-heads needs --np-target-epoch E when the run has no --max-epoch "
                             "(the budget is reached at the last pruning epoch of the run by default)")
        epochs = pruning_epochs(start, every, max_epoch)
        if not epochs:
            raise ValueError(f"--max-epoch {max_epoch} ends before the first pruning epoch "
                             f"(--np-prune-start-epoch {start}): no epoch can reach the head budget")
        return epochs[-1]
    if target_epoch < start or (target_epoch - start) % every:
        raise ValueError(f"--np-target-epoch {target_epoch} is not a pruning epoch (pruning runs after epochs "
                         f"{start}, {start + every}, ...: --np-prune-start-epoch {start}, --np-prune-every {every})")
    if 0 < max_epoch < target_epoch:
        raise ValueError(f"--np-target-epoch {target_epoch} is after --max-epoch {max_epoch}: the budget would "
                         "never be reached; lower it or train longer")
    return target_epoch


#: the option names of a head budget as the fairseq task spells them (the HF arguments pass their own)
BUDGET_OPTIONS = ("--np-target-heads", "--np-target-heads-per-module")


def check_one_budget(total: int, per_module: int, options: Tuple[str, str] = BUDGET_OPTIONS) -> None:
    """A head budget is a total or a count per module, not both (``options``: how the caller
    names the two, for the message)."""
    if total and per_module:
        raise ValueError(f"give either {options[0]} (a total) or {options[1]}, not both")


def check_budget(counts: Sequence[int], total: int = 0, per_module: int = 0) -> None:
    """Refuse a budget the model cannot meet (before training): at least one head per module,
    no more heads than the model has."""
    check_one_budget(total, per_module)
    n_mod, n_heads = len(counts), sum(counts)
    if total:
        if total < n_mod:
            raise ValueError(f"--np-target-heads {total} is below the number of attention modules ({n_mod}); "
                             f"every module keeps at least one head: use K >= {n_mod}")
        if total > n_heads:
            raise ValueError(f"--np-target-heads {total} is more than the model's {n_heads} heads: use K <= {n_heads}")
    if per_module:
        if per_module < 1:
            raise ValueError("--np-target-heads-per-module must be >= 1")
        small = [i for i, c in enumerate(counts) if c < per_module]
        if small:
            raise ValueError(f"--np-target-heads-per-module {per_module}: attention module {small[0]} has only "
                             f"{counts[small[0]]} heads; use at most {min(counts)}")


def scheduled_heads(current: int, final: int, epoch: int, start: int, every: int, target_epoch: int) -> int:
    """Heads to keep after pruning epoch ``epoch``: linear over the pruning epochs left up to
    ``target_epoch`` (module docstring, step 1); ``final`` from ``target_epoch`` on."""
    if current <= final or epoch >= target_epoch:
        return min(current, final)
    left = (target_epoch - epoch) // every + 1  # pruning epochs in [epoch, target_epoch]
    return final + ((current - final) * (left - 1)) // left


def epoch_target(counts: Sequence[int], total: int, per_module: int, epoch: int, start: int, every: int,
                 target_epoch: int) -> Union[int, List[int]]:
    """The scheduled count(s) for this pruning epoch (:func:`scheduled_heads`): one per module
    (``per_module`` > 0) or one total, from the current head ``counts``."""
    if per_module:
        return [scheduled_heads(c, int(per_module), epoch, start, every, target_epoch) for c in counts]
    return scheduled_heads(sum(counts), int(total), epoch, start, every, target_epoch)


def candidate_thetas(distances: Sequence[Tensor]) -> List[float]:
    """``NO_THETA`` then every distinct off-diagonal head distance, ascending: the only values
    at which the similarity graphs (hence the dominating sets) change."""
    vals = [d[~torch.eye(d.shape[0], dtype=torch.bool)] for d in distances if d.shape[0] > 1]
    if not vals:
        return [NO_THETA]
    return [NO_THETA] + torch.unique(torch.cat(vals).double()).tolist()


def plans_at(distances: Sequence[Tensor], theta: float, method: str) -> List[RedundancyPlan]:
    return [plan_from_distance(d, theta, method) for d in distances]


def kept(plans: Sequence[RedundancyPlan]) -> int:
    return sum(len(p.keep) for p in plans)


def choose_theta(distances: Sequence[Tensor], target: int, method: str = "heuristic") -> Tuple[float, List[RedundancyPlan], int]:
    """Bisection over :func:`candidate_thetas`: the largest theta found whose dominating sets
    keep ``>= target`` heads. Returns ``(theta, plans, evaluations)``. The kept count is
    non-increasing in theta for the exact dominating set; for Algorithm 3 it is in practice, and
    the invariant ``kept(lo) >= target`` holds either way."""
    cands = candidate_thetas(distances)
    lo, hi = 0, len(cands) - 1
    plans_lo = plans_at(distances, cands[lo], method)
    evals = 1
    if kept(plans_lo) <= target:  # nothing to remove (or no candidate keeps enough)
        return cands[lo], plans_lo, evals
    plans_hi = plans_at(distances, cands[hi], method)
    evals += 1
    if kept(plans_hi) >= target:
        return cands[hi], plans_hi, evals
    while hi - lo > 1:
        mid = (lo + hi) // 2
        plans_mid = plans_at(distances, cands[mid], method)
        evals += 1
        if kept(plans_mid) >= target:
            lo, plans_lo = mid, plans_mid
        else:
            hi = mid
    return cands[lo], plans_lo, evals


def complete_closest_first(plans: List[RedundancyPlan], distances: Sequence[Tensor], target: int) -> List[Tuple[int, int, int, float]]:
    """Merge kept heads, closest pair first, until ``target`` are kept (module docstring, step 3).
    Edits ``plans`` in place; returns the merges ``(module, removed head, into head, distance)``."""
    merges = []
    while kept(plans) > target:
        best = None
        for m, (plan, d) in enumerate(zip(plans, distances)):
            ks = plan.keep
            for a in range(len(ks)):
                for b in range(a + 1, len(ks)):
                    cand = (float(d[ks[a], ks[b]]), m, ks[a], ks[b])
                    if best is None or cand < best:
                        best = cand
        if best is None:
            raise ValueError(f"cannot keep {target} heads: every module is down to one head ({kept(plans)} kept)")
        dist, m, i, j = best
        rep = plans[m].rep
        load = {h: sum(1 for r in rep if r == h) for h in (i, j)}
        gone, into = (i, j) if (load[i], i) <= (load[j], j) else (j, i)
        plans[m].rep = [into if r == gone else r for r in rep]
        merges.append((m, gone, into, dist))
    return merges


@dataclass
class TargetPlan:
    """What one pruning epoch decided: a plan per module (resolved representatives, all
    merges into kept heads), the theta of each group, and how the count was reached."""

    plans: List[RedundancyPlan]
    thetas: List[float]  # one (global) or one per module
    targets: List[int]  # the scheduled count of each group
    kept_by_threshold: int  # heads the dominating sets kept, before the closest-first merges
    merges: List[Tuple[int, int, int, float]] = field(default_factory=list)
    evaluations: int = 0

    @property
    def heads_per_module(self) -> List[int]:
        return [len(p.keep) for p in self.plans]

    def describe(self) -> str:
        th = " ".join("none" if t == NO_THETA else f"{t:.4g}" for t in self.thetas)
        return (f"target {sum(self.targets)}: theta={th} (bisection over head distances, {self.evaluations} evaluations) "
                f"keeps {self.kept_by_threshold}, then {len(self.merges)} closest-first merge(s) -> {sum(self.heads_per_module)}")


def plan_target_heads(
    distances: Sequence[Tensor],
    target: Union[int, Sequence[int]],
    method: str = "heuristic",
    per_module: bool = False,
) -> TargetPlan:
    """Plans (one per module, from their head distance matrices) that keep exactly ``target``
    heads: an int over all modules, or with ``per_module`` one int per module (or one int for
    every module). Raises if the target is out of reach (below one head per module or above
    the heads present)."""
    counts = [d.shape[0] for d in distances]
    if per_module:
        targets = [int(target)] * len(counts) if isinstance(target, int) else [int(t) for t in target]
        if len(targets) != len(counts) or any(not 1 <= t <= c for t, c in zip(targets, counts)):
            raise ValueError(f"per-module targets {targets} out of range for modules of {counts} heads")
        groups = [[m] for m in range(len(counts))]
    else:
        targets = [int(target)]
        check_budget(counts, total=targets[0])
        groups = [list(range(len(counts)))]
    plans: List[Optional[RedundancyPlan]] = [None] * len(counts)
    thetas, merges, by_threshold, evals = [], [], 0, 0
    for group, t in zip(groups, targets):
        ds = [distances[m] for m in group]
        theta, gp, n = choose_theta(ds, t, method)
        by_threshold += kept(gp)
        evals += n
        for m, p in zip(group, gp):
            p.theta = theta
        merges += [(group[m], i, j, dist) for m, i, j, dist in complete_closest_first(gp, ds, t)]
        for m, p in zip(group, gp):
            plans[m] = p
        thetas.append(theta)
    return TargetPlan(plans, thetas, targets, by_threshold, merges, evals)


def prune_sites_to_target_(sites, target, method: str = "heuristic", per_module: bool = False, optimizer=None):
    """One pruning epoch under a head budget on attention sites (:mod:`neuroprune_fairseq.core.sites`):
    plan on the current weights (:func:`plan_target_heads`: bisection over theta, closest-first
    completion), then merge + physical removal with the optimizer state sliced. Returns the
    per-module :class:`~neuroprune_fairseq.core.policy.HeadPruneResult` list and the plan."""
    from .policy import apply_site_plans_
    from .redundancy import head_distance_matrix

    dists = [head_distance_matrix(s.q.weight, s.k.weight, s.v.weight, s.num_heads) for s in sites]
    tp = plan_target_heads(dists, target, method, per_module=per_module)
    return apply_site_plans_(sites, tp.plans, optimizer), tp
