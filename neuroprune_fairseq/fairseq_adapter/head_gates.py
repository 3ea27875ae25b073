"""Head gates on fairseq attention, shared by the DSP and Michel et al. baselines, without
forking fairseq's model code.

* :class:`HeadGateHooks` -- a forward pre-hook on every attention module's ``out_proj``
  multiplies head h's slice ``[h*hd:(h+1)*hd]`` of the out-projection's input by
  ``mask[module, h]``. This equals DSP's mask on the head's attention probabilities
  (``(m * P) V = m * (P V)``). Installing the hooks sets ``skip_embed_dim_check`` so
  fairseq takes its Python attention path (torch's fused ``F.multi_head_attention_forward``
  reads ``out_proj.weight`` directly and would bypass the hook); the result is the same.
* :func:`head_importance` -- Michel et al.'s importance: the gradient of the loss at gates 1.
* :func:`finalize_heads_` -- physical removal of the heads outside the kept sets with
  NeuroPrune's surgery; see :mod:`neuroprune_fairseq.commands.dsp_finalize` for the command.
"""
import logging
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.policy import prune_site_heads_
from ..core.surgery import zero_heads_
from ..core.topology import active_head_count
from .sites import attention_sites

logger = logging.getLogger(__name__)

EMPTY_POLICIES = ("zero", "keep-best")


class HeadGateHooks:
    """Multiplies every head's attention output by ``mask`` (flat, module-major) through a
    forward pre-hook on each attention module's ``out_proj``. ``mask = None``: no gating."""

    def __init__(self, model: nn.Module):
        self.sites = attention_sites(model)
        if not self.sites:
            raise ValueError(f"{type(model).__name__} has no fairseq MultiheadAttention module to gate")
        self.counts = [s.num_heads for s in self.sites]
        self.offsets = [sum(self.counts[:i]) for i in range(len(self.counts))]
        self.mask: Optional[Tensor] = None
        self.handles = []
        for i, s in enumerate(self.sites):
            s.module.skip_embed_dim_check = True  # Python attention path: it calls out_proj(...)
            self.handles.append(s.out.register_forward_pre_hook(self._make_hook(i, s)))

    @property
    def total(self) -> int:
        return sum(self.counts)

    def _make_hook(self, i: int, site):
        def hook(module, args):
            if self.mask is None:
                return None
            x = args[0]
            n = site.num_heads
            if n != self.counts[i]:
                raise RuntimeError(f"{site.name} has {n} heads, the gates were built for {self.counts[i]}")
            m = self.mask[self.offsets[i]:self.offsets[i] + n].to(x.dtype)
            return (x * m.repeat_interleave(site.head_dim),) + tuple(args[1:])

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def head_importance(model, batches, pad_idx: int, normalize_by_layer: bool = True) -> torch.Tensor:
    """Michel et al.: flat (module-major) ``sum_batches |d NLL / d gate|`` at gates = 1."""
    hooks = HeadGateHooks(model)
    gates = torch.ones(hooks.total, requires_grad=True)
    imp = torch.zeros(hooks.total)
    hooks.mask = gates
    try:
        for sample in batches:
            if not sample:
                continue
            net_output = model(**sample["net_input"])
            lprobs = model.get_normalized_probs(net_output, log_probs=True)
            loss = F.nll_loss(lprobs.view(-1, lprobs.size(-1)), sample["target"].view(-1),
                              ignore_index=pad_idx, reduction="sum")
            (g,) = torch.autograd.grad(loss, gates)
            imp += g.detach().abs()
    finally:
        hooks.mask = None
        hooks.remove()
    if normalize_by_layer:
        parts = torch.split(imp, hooks.counts)
        imp = torch.cat([p / (p.norm(p=2) + 1e-20) for p in parts])
    return imp


def finalize_heads_(
    model: nn.Module,
    keep: Sequence[Sequence[int]],
    scores: Optional[Tensor] = None,
    empty: str = "zero",
) -> Dict:
    """Physically remove every head not in ``keep[i]`` from attention module i.

    A module whose heads are all pruned cannot have 0 heads in fairseq. ``empty='zero'``
    (default) keeps one placeholder head (the best-scored one) with all its q/k/v rows and
    out-projection columns set to zero, so the module outputs its out-projection bias,
    exactly as the hard-masked DSP model does; ``'keep-best'`` keeps that head with its
    weights (one head over the budget per such module). Returns a report.
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty-module policy must be one of {EMPTY_POLICIES}, got {empty!r}")
    sites = attention_sites(model)
    if len(sites) != len(keep):
        raise ValueError(f"{len(keep)} keep lists for {len(sites)} attention modules")
    offset, active, physical, empties = 0, [], [], []
    for site, ks in zip(sites, keep):
        name, n = site.name, site.num_heads
        ks = sorted(int(h) for h in ks)
        if any(h < 0 or h >= n for h in ks):
            raise ValueError(f"{name}: head ids {ks} out of range for {n} heads")
        if not ks:
            best = int(torch.argmax(scores[offset:offset + n]).item()) if scores is not None else 0
            ks = [best]
            empties.append(name)
            if empty == "zero":
                zero_heads_(site.q, site.k, site.v, site.out, site.head_dim, [best])
            logger.warning(f"DSP finalise: every head of {name} is pruned; kept head {best} "
                           f"{'zeroed (module outputs its out_proj bias)' if empty == 'zero' else 'with its weights'}")
        prune_site_heads_(site, ks)
        # counted as every report counts them: a zeroed placeholder is no head, a kept best head is one
        active.append(active_head_count(site.q.weight, site.k.weight, site.v.weight, site.out.weight, site.head_dim))
        physical.append(site.num_heads)
        offset += n
    return {"heads_per_module": active, "heads_kept": sum(active),
            "physical_heads_per_module": physical, "empty_modules": empties, "empty_policy": empty}
