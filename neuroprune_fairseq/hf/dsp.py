"""DSP (Li, Cotterell, Sachan, TACL 2021) and Michel et al. (2019) head pruning on HuggingFace
models, through hooks (no forked model code). The gate math is :mod:`neuroprune_fairseq.core.dsp`,
the head removal :func:`neuroprune_fairseq.core.policy.prune_site_heads_` (NeuroPrune's surgery),
the attention sites :func:`neuroprune_fairseq.hf.roles.attention_sites`; so every family of
``roles.py`` with a q/k/v/out table works (tested: BERT, OPT).

* :class:`HeadGates`        -- an ``nn.Module`` holding DSP's gate logits (flat, module-major) and a
  forward pre-hook on every attention module's out projection that multiplies head h's slice of
  its input by ``mask[h]`` (``(m P) V = m (P V)``: DSP's mask on the attention probabilities).
* :func:`dsp_joint_train_`   -- DSP joint: gates and weights trained together (the paper: 3 epochs),
  Gumbel soft top-K at the annealed temperature (:func:`~neuroprune_fairseq.core.dsp.dsp_mask`).
* :func:`dsp_topk_`          -- the hard top-K of the logits over the whole model, then removal.
* :func:`michel_importance`  -- ``I_h = sum_batches |dL/d xi_h|`` at gates ``xi = 1``.
* :func:`prune_to_top_k_`    -- keep the K best-scored heads of the model, remove the others.

Choices where the papers are silent or the project differs: gate logits start at 0 (the first
top-K is decided by the Gumbel noise, as DSP's default), eval uses the noiseless hard top-K (DSP's
code samples noise in eval too), the temperature anneals from ``t0=0.1`` to ``tf=1e-8`` over the
whole joint run unless ``anneal_steps`` is given (DSP: 15000 updates on IWSLT), the gates get
their own AdamW at ``gate_lr`` (DSP's ``--pruning-lr``). A module with no head in the top-K
keeps one zeroed placeholder head (HF attention cannot hold 0 heads): it outputs its out
projection's bias, exactly as the hard-masked model does, and ``heads_kept`` counts it as 0.
Michel: the loss is the model's own (``model(**batch).loss``, eval mode), the absolute gradient
is taken per batch and summed (as the fairseq side), and the scores of each module are divided
by their l2 norm (Michel et al.'s code) unless ``normalize_by_layer=False``.
"""
import logging
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ..core.dsp import dsp_mask, dsp_temperature, top_k_heads
from ..core.policy import prune_site_heads_
from ..core.sites import ATTN_KINDS
from ..core.surgery import zero_heads_
from .roles import attention_sites

logger = logging.getLogger(__name__)

__all__ = ["HeadGates", "attach_head_gates", "check_k", "dsp_joint_train_", "dsp_topk_", "michel_importance",
           "prune_to_top_k_", "model_loss"]


def check_k(k, total: int) -> int:
    """``k`` as an int in ``[1, total]``, or a ValueError that says what to pass."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= total:
        raise ValueError(f"K (heads kept in the whole model) must be an integer in [1, {total}] "
                         f"(the model has {total} heads), got {k!r}; pass a K in that range")
    return k


class HeadGates(nn.Module):
    """Gate logits ``logits`` (one per head, module-major) and the hooks that apply ``mask``.

    ``mask = None``: no gating (the hooks pass the input through). Set ``mask`` to a flat tensor
    of ``total`` entries (e.g. :meth:`dsp_mask`) before a forward pass. ``remove()`` detaches the
    hooks; the model is then the stock one again.
    """

    def __init__(self, model: nn.Module, kinds: Sequence[str] = ATTN_KINDS, init_std: float = 0.0):
        super().__init__()
        sites = attention_sites(model, kinds)
        if not sites:
            raise ValueError(f"{type(model).__name__} has no attention module of kinds {list(kinds)} to gate")
        self.sites = sites
        self.counts: List[int] = [s.num_heads for s in sites]
        device = sites[0].q.weight.device
        self.logits = nn.Parameter(torch.randn(self.total, device=device) * init_std if init_std > 0
                                   else torch.zeros(self.total, device=device))
        self.mask: Optional[Tensor] = None
        self.hooks = [s.out.register_forward_pre_hook(self._hook(i)) for i, s in enumerate(sites)]

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def offsets(self) -> List[int]:
        return [sum(self.counts[:i]) for i in range(len(self.counts))]

    def _hook(self, i: int):
        site = self.sites[i]

        def hook(module, args):
            if self.mask is None:
                return None
            if site.num_heads != self.counts[i]:
                raise RuntimeError(f"{site.name} has {site.num_heads} heads, the gates were built for {self.counts[i]}")
            start = self.offsets[i]
            m = self.mask[start:start + self.counts[i]].to(device=args[0].device, dtype=args[0].dtype)
            return (args[0] * m.repeat_interleave(site.head_dim),) + tuple(args[1:])

        return hook

    def dsp_mask(self, k: int, t: float, training: bool, straight_through: bool = False) -> Tensor:
        """DSP's mask of one forward pass (:func:`neuroprune_fairseq.core.dsp.dsp_mask`)."""
        return dsp_mask(self.logits, check_k(k, self.total), t, training, straight_through)

    def split(self, flat: Tensor) -> Dict[str, Tensor]:
        """A flat module-major vector as ``{attention module name: its heads' entries}``."""
        return dict(zip([s.name for s in self.sites], torch.split(flat, self.counts)))

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()
        self.hooks = []
        self.mask = None


def attach_head_gates(model: nn.Module, kinds: Sequence[str] = ATTN_KINDS, init_std: float = 0.0) -> HeadGates:
    """:class:`HeadGates` on every attention module of ``model`` of the given kinds."""
    return HeadGates(model, kinds, init_std)


def model_loss(model: nn.Module, batch: dict) -> Tensor:
    """The HF model's own loss (``batch`` holds ``labels``)."""
    out = model(**batch)
    if getattr(out, "loss", None) is None:
        raise ValueError("the model returned no loss: the batches must hold 'labels'")
    return out.loss


def dsp_joint_train_(
    model: nn.Module,
    gates: HeadGates,
    k: int,
    batches: Callable[[], Iterable[dict]],
    epochs: int = 3,
    lr: float = 2e-5,
    gate_lr: float = 0.2,
    t0: float = 0.1,
    tf: float = 1e-8,
    anneal_steps: Optional[int] = None,
    straight_through: bool = False,
    weight_decay: float = 0.0,
    loss_fn: Callable[[nn.Module, dict], Tensor] = model_loss,
    max_grad_norm: float = 0.0,
    train_weights: bool = True,
) -> Dict:
    """DSP joint: ``epochs`` passes over ``batches()`` (a callable returning a fresh iterable per
    epoch) training the model (AdamW at ``lr``) and the gate logits (AdamW at ``gate_lr``)
    together on the loss of the Gumbel-soft-top-K-gated model; the temperature anneals from
    ``t0`` to ``tf`` over ``anneal_steps`` updates (default: all updates of the run). Leaves the
    model in eval mode with the gates' mask unset. Returns ``{'steps', 'losses', 'final_t'}``.
    ``train_weights=False``: only the gates learn (DSP pipelined's gate phase on a fine-tuned
    model; DSP anneals over 250 updates there: pass ``anneal_steps=250``)."""
    check_k(k, gates.total)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not (t0 > 0 and tf > 0):
        raise ValueError(f"temperatures must be > 0, got t0={t0}, tf={tf}")
    gate_ids = {id(p) for p in gates.parameters()}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in gate_ids]
    if not train_weights:
        weights = []
    opt = torch.optim.AdamW(weights, lr=lr, weight_decay=weight_decay) if weights else None
    gate_opt = torch.optim.AdamW([gates.logits], lr=gate_lr, weight_decay=0.0)
    if anneal_steps is None:
        try:
            anneal_steps = epochs * len(batches())
        except TypeError:
            anneal_steps = 15000  # DSP's joint default when the epoch length is unknown
    step, losses = 0, []
    model.train()
    try:
        for _ in range(epochs):
            for batch in batches():
                t = dsp_temperature(step, t0, tf, anneal_steps)
                gates.mask = gates.dsp_mask(k, t, training=True, straight_through=straight_through)
                loss = loss_fn(model, batch)
                model.zero_grad(set_to_none=True)
                gate_opt.zero_grad(set_to_none=True)
                loss.backward()
                g = gates.logits.grad
                if g is not None and not bool(torch.isfinite(g).all()):
                    g.zero_()  # the K-step recursion can overflow at tiny t: skip the gates' step (fairseq side too)
                if max_grad_norm > 0 and weights:
                    torch.nn.utils.clip_grad_norm_(weights, max_grad_norm)
                if opt is not None:
                    opt.step()
                gate_opt.step()
                losses.append(float(loss.detach()))
                step += 1
    finally:
        gates.mask = None
        model.zero_grad(set_to_none=True)
        model.eval()
    return {"steps": step, "losses": losses, "final_t": dsp_temperature(step, t0, tf, anneal_steps)}


def prune_to_top_k_(
    model: nn.Module,
    scores: Union[Tensor, Dict[str, Tensor]],
    k: int,
    kinds: Sequence[str] = ATTN_KINDS,
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> Dict:
    """Keep the ``k`` best-scored heads of the whole model (``scores``: flat module-major, or
    ``{module name: per-head scores}`` in model order), remove the others physically with
    NeuroPrune's surgery. A module with none of the top-K keeps its best head zeroed (see the
    module doc). Returns ``{'heads_kept', 'heads_per_module', 'empty_modules', 'kept_heads'}``."""
    sites = attention_sites(model, kinds)
    counts = [s.num_heads for s in sites]
    if isinstance(scores, dict):
        missing = [s.name for s in sites if s.name not in scores]
        if missing:
            raise ValueError(f"no scores for attention modules {missing[:3]}")
        scores = torch.cat([scores[s.name].detach().flatten().float() for s in sites])
    scores = scores.detach().flatten().float()
    if scores.numel() != sum(counts):
        raise ValueError(f"{scores.numel()} scores for {sum(counts)} heads; score the model as it is now")
    check_k(k, sum(counts))
    keep = top_k_heads(scores, k, counts)
    per_module, empty, start = [], [], 0
    for site, ks, n in zip(sites, keep, counts):
        per_module.append(len(ks))
        if not ks:
            best = int(torch.argmax(scores[start:start + n]))
            zero_heads_(site.q, site.k, site.v, site.out, site.head_dim, [best])
            ks = [best]
            empty.append(site.name)
            logger.warning(f"top-K: no head of {site.name} kept; head {best} stays as a zeroed placeholder")
        prune_site_heads_(site, ks, optimizer)
        start += n
    return {"heads_kept": sum(per_module), "heads_per_module": per_module, "empty_modules": empty,
            "kept_heads": {s.name: s.kept_heads for s in sites}}


def dsp_topk_(model: nn.Module, gates: HeadGates, k: int, optimizer: Optional[torch.optim.Optimizer] = None) -> Dict:
    """DSP's test-time hard top-K of the gate logits over the whole model, then the physical
    removal (:func:`prune_to_top_k_`); the gates' hooks are removed first."""
    logits = gates.logits.detach().clone()
    names = [s.name for s in gates.sites]
    gates.remove()
    kinds = tuple(sorted({s.kind for s in gates.sites}))
    current = [s.name for s in attention_sites(model, kinds)]
    if current != names:
        raise ValueError("the model's attention modules changed since the gates were attached")
    return prune_to_top_k_(model, logits, k, kinds, optimizer)


def michel_importance(
    model: nn.Module,
    batches: Iterable[dict],
    kinds: Sequence[str] = ATTN_KINDS,
    normalize_by_layer: bool = True,
    loss_fn: Callable[[nn.Module, dict], Tensor] = model_loss,
) -> Dict[str, Tensor]:
    """Michel et al.'s head importance ``sum over batches |dL/d xi_h|`` at gates ``xi = 1`` (model
    in eval mode, its weights' gradients untouched), per attention module in model order."""
    gates = HeadGates(model, kinds)
    xi = torch.ones(gates.total, device=gates.logits.device, requires_grad=True)
    imp = torch.zeros(gates.total)
    was_training = model.training
    model.eval()
    n = 0
    try:
        gates.mask = xi
        for batch in batches:
            loss = loss_fn(model, batch)
            (g,) = torch.autograd.grad(loss, xi)
            imp += g.detach().abs().float().cpu()
            n += 1
    finally:
        gates.remove()
        model.train(was_training)
    if n == 0:
        raise ValueError("michel_importance got no batches")
    parts = torch.split(imp, gates.counts)
    if normalize_by_layer:
        parts = [p / (p.norm(p=2) + 1e-20) for p in parts]
    return {s.name: p for s, p in zip(gates.sites, parts)}
