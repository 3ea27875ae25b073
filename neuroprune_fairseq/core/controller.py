"""The strengths of the proximal steps, driven so that the penalties make the target sparsity.

``--np-target-sparsity S`` in the default ``penalty`` mode: the attention pool (the penalised
modules' q, k, v: Eq. 2, or l1) and the MLP pool (fc1, fc2: Eq. 1, or l1) each get a
multiplier ``m`` on the user's strength (``alpha`` for attention, ``beta`` for the MLP),
updated after every proximal step by dual ascent in log space on the gap between the pool's
scheduled share of zeros and the share it has (percentage points)::

    log m <- clip(log m + gain * (scheduled - measured), -max_log, max_log)

as CoFi's Lagrangian multiplier, in log space so one gain serves strengths that differ by
orders of magnitude. Zeros are not masked while the controller drives (a weight the prox
zeroed may come back when the strength falls), so the sparsity follows the strength both
ways; the pools' shares are the proximal maps' own output. The state (``state_dict``) is saved
with the run so a resumed run continues with the same strengths.

The per-weight step of the proximal maps (:func:`optimizer_step_of`) is the optimizer's own:
for Adam-family optimizers ``lr / (sqrt(v_hat) + eps)`` from its second-moment state, the step
the penalty's gradient would get in the gradient mode, so ``alpha`` and ``beta`` mean the same
in both modes (ProxGen, Yun et al. 2021); for optimizers without that state, ``lr``.
"""
import math
from typing import Dict, Iterable

POOLS = ("attn", "mlp")


class StrengthController:
    def __init__(self, gain: float = 0.05, max_log: float = 30.0, max_change: float = 0.5,
                 pools: Iterable[str] = POOLS):
        if not (math.isfinite(gain) and gain > 0):
            raise ValueError(f"the controller gain must be a finite number > 0, got {gain}")
        self.gain, self.max_log, self.max_change = float(gain), float(max_log), float(max_change)
        self.log_mult: Dict[str, float] = {p: 0.0 for p in pools}
        self.updates = 0

    def multiplier(self, pool: str) -> float:
        return math.exp(self.log_mult[pool])

    def update_(self, pool: str, scheduled: float, measured: float) -> float:
        """One dual-ascent step for ``pool`` (both shares in percent); returns the new multiplier."""
        change = self.gain * (scheduled - measured)
        change = max(-self.max_change, min(self.max_change, change))
        self.log_mult[pool] = max(-self.max_log, min(self.max_log, self.log_mult[pool] + change))
        return self.multiplier(pool)

    def state_dict(self) -> Dict:
        return {"log_mult": dict(self.log_mult), "updates": self.updates}

    def load_state_dict(self, state: Dict) -> None:
        for pool, value in dict(state.get("log_mult", {})).items():
            if pool in self.log_mult:
                self.log_mult[pool] = float(value)
        self.updates = int(state.get("updates", 0))


# ------------------------------------------------------------------ the penalty-driven target
TARGET_MODES = ("penalty", "cut")


def zero_unread_inputs_(mlp) -> int:
    """Zero the fc1 rows of the MLP neurons whose fc2 column is all zero: their output is never
    read, so the model computes the same function (and their gradient is zero), and ``finalize``
    would remove those rows anyway; counting them as zeros now makes the sparsity the controller
    steers the sparsity of the finalised model. Returns how many weights it zeroed."""
    import torch

    n = 0
    with torch.no_grad():
        for fc1s, fc2 in mlp:
            unread = (fc2 == 0).all(0)
            if bool(unread.any()):
                for f in fc1s:
                    kill = unread.unsqueeze(1) & (f != 0)
                    n += int(kill.sum())
                    f.masked_fill_(kill, 0.0)
    return n


def folded_outputs(roles) -> int:
    """Non-zero fc2 entries of neurons whose fc1 rows are all zero, where the adapter's finalise
    folds such a neuron's constant into fc2's bias and removes its column
    (``roles.folds_constant_neurons``): they count as zeros here."""
    if not getattr(roles, "folds_constant_neurons", False):
        return 0
    n = 0
    for fc1s, fc2 in roles.mlp:
        no_input = None
        for f in fc1s:
            z = (f == 0).all(1)
            no_input = z if no_input is None else no_input & z
        if no_input is not None and bool(no_input.any()):
            n += int((fc2[:, no_input] != 0).sum())
    return n


def _give_back_excess_(weights, before, allowed: int) -> int:
    """Restore the largest (by their value before the step) of the weights this step zeroed until
    at most ``allowed`` of ``weights`` are zero; returns how many were restored."""
    import torch

    zeros = sum(int((w == 0).sum()) for w in weights)
    excess = zeros - max(allowed, 0)
    if excess <= 0:
        return 0
    new = torch.cat([torch.where((w == 0) & (b != 0), b.abs(), torch.zeros_like(b)).reshape(-1).float()
                     for w, b in zip(weights, before)])
    excess = min(excess, int((new > 0).sum()))
    if excess <= 0:
        return 0
    flat_idx = new.topk(excess).indices
    offset, restored = 0, 0
    with torch.no_grad():
        for w, b in zip(weights, before):
            n = w.numel()
            mine = flat_idx[(flat_idx >= offset) & (flat_idx < offset + n)] - offset
            if mine.numel():
                w.view(-1)[mine] = b.reshape(-1)[mine].to(w.dtype)
                restored += mine.numel()
            offset += n
    return restored


def ramp_done(step: int, total: int, end: float) -> bool:
    """Whether update ``step`` (1-based) of ``total`` is at or past the end of the target ramp."""
    return step >= end * total


def penalty_driven_step_(roles, coef_attn: float, coef_mlp: float, step_of, target: float,
                         controller: StrengthController, step: int, total: int, end: float,
                         cap: float = 99.0) -> Dict:
    """After an optimizer step, ``--np-target-sparsity`` in the ``penalty`` mode.

    While the ramp runs (``done`` False): the proximal step with the strengths
    ``coef * multiplier`` per pool, then one controller update per penalised pool on the gap
    between the share of zeros it must hold and the share the prox left. The penalised pools
    carry the whole target: their share is set so that their zeros, with the zeros the other
    counted matrices (out projections) happen to have and the removed heads, make ``target``
    percent of the dense count (at most ``cap`` percent of a pool). Nothing is cut. On the last
    step of the ramp (after it the zeros are kept) a pool that the prox took above its share gets
    back the largest of the weights this prox zeroed beyond it (their values before the step), so
    the run never ends above the target by more than the rounding of one weight per pool.

    Once the ramp is done: no proximal step (the rest of the run recovers at a fixed mask, as
    in the ``cut`` mode); whatever is still below ``target`` is closed by the cut of
    :mod:`.target` (penalty-shaped scores), the penalised pools first (up to ``cap``), then the
    others. Returns ``{"cut": weights the cut zeroed, "scheduled": pool share, "shares": ...}``.
    """
    import torch

    from .target import cut_pool_to_, proximal_step_

    pools = roles.pools()
    named = dict(zip(("attn", "mlp", "rest"), pools))
    sizes = {k: sum(w.numel() for w in p.weights) for k, p in named.items()}
    present = sum(w.numel() for w in roles.counted)
    removed = max(roles.dense - present, 0)
    need = max(math.ceil(target / 100.0 * (present + removed) - 1e-9) - removed, 0)

    def zeros(k):
        n = int(sum(int((w == 0).sum()) for w in named[k].weights))
        return n + (folded_outputs(roles) if k == "mlp" else 0)

    active = [k for k, c in (("attn", coef_attn), ("mlp", coef_mlp)) if c > 0 and sizes[k]]
    report = {"cut": 0, "multipliers": {k: controller.multiplier(k) for k in POOLS}}
    done, final = ramp_done(step, total, end), ramp_done(step + 1, total, end)
    if not done:
        before = {k: [w.detach().clone() for w in named[k].weights] for k in active} if final else None
        proximal_step_(roles, coef_attn * controller.multiplier("attn"), coef_mlp * controller.multiplier("mlp"), step_of)
        zero_unread_inputs_(roles.mlp)
        pen = sum(sizes[k] for k in active)
        if not pen:
            return report
        scheduled = min(max((need - zeros("rest")) / pen * 100.0, 0.0), cap)
        if final:
            for k in active:
                folded = folded_outputs(roles) if k == "mlp" else 0
                _give_back_excess_(named[k].weights, before[k], math.ceil(scheduled / 100.0 * sizes[k] - 1e-9) - folded)
            zero_unread_inputs_(roles.mlp)
        shares = {k: 100.0 * zeros(k) / sizes[k] for k in active}
        for k in active:
            controller.update_(k, scheduled, shares[k])
        controller.updates += 1
        report.update(scheduled=scheduled, shares=shares, multipliers={k: controller.multiplier(k) for k in POOLS})
        return report
    have = sum(zeros(k) for k in named)
    gap = need - have
    if gap <= 0:
        return report
    cut = 0
    with torch.no_grad():
        order = active + [k for k in named if k not in active]
        for k in order:
            if gap <= 0:
                break
            z = zeros(k)
            room = (math.floor(cap / 100.0 * sizes[k]) if k in active else sizes[k]) - z
            if room <= 0:
                continue
            if k in active and len(active) > 1 and order.index(k) == 0:  # share the gap by pool size
                take = min(room, math.ceil(gap * sizes[k] / sum(sizes[a] for a in active)))
            else:
                take = min(room, gap)
            n = cut_pool_to_(named[k], z - (folded_outputs(roles) if k == "mlp" else 0) + take)
            cut += n
            gap -= n
    report["cut"] = cut
    return report


def optimizer_step_of(optimizer, lookup=None):
    """``step_of(w)`` for :func:`.target.proximal_step_`: the per-weight step of the torch
    ``optimizer`` for parameter ``w``: ``lr / (sqrt(v / (1 - beta2^t)) + eps)`` where the
    optimizer keeps Adam's ``exp_avg_sq`` for ``w``, its group's ``lr`` otherwise (SGD, or a
    weight the optimizer has not stepped yet).

    ``lookup(w)``, when given, returns ``(param group, state)`` for ``w`` (``None`` for a weight the
    optimizer does not train), the state's tensors of ``w``'s shape: for weights the optimizer
    holds as slices of something else (fairseq's flat fp32 master copy under ``--fp16``)."""
    if lookup is None:
        groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}

        def lookup(w):
            g = groups.get(id(w))
            return None if g is None else (g, optimizer.state.get(w) or {})

    def step_of(w):
        found = lookup(w)
        if found is None:
            raise ValueError("the proximal step met a weight that the optimizer does not train")
        g, st = found
        v = st.get("exp_avg_sq")
        if v is None or v.shape != w.shape:
            return float(g["lr"])
        t = float(st.get("step", g.get("step", 1)))  # fused multi-tensor Adams count steps per group
        beta2 = float(g.get("betas", (0.9, 0.999))[1])
        v_hat = v.float() / max(1.0 - beta2 ** max(t, 1.0), 1e-12)
        return float(g["lr"]) / (v_hat.sqrt() + float(g.get("eps", 1e-8)))

    return step_of
