"""The checkpoints ``neuroprune-topology`` reports on, as adapter-free views: each attention
module's q, k, v, out weights with its head layout and dense size, each MLP's fc1 / fc2 with its
dense size, and which original head positions survive where the checkpoint records them.
A fairseq checkpoint is read through :mod:`neuroprune_fairseq.fairseq_adapter.checkpoints`; an
HF folder through :mod:`neuroprune_fairseq.hf` (``save_pruned`` or ``save_pretrained``).
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch


@dataclass
class AttnView:
    """One attention module, adapter-free: weights, head layout and its dense size."""

    name: str
    kind: str
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    head_dim: int
    dense_heads: int
    dense_weights: int
    kept_positions: Optional[List[int]]  # original head indices still there; None: not recorded


@dataclass
class MlpView:
    name: str
    kind: str
    fc1: List[torch.Tensor]  # one, or two for a gated MLP
    fc2: torch.Tensor
    dense_neurons: int
    dense_weights: int


@dataclass
class Loaded:
    path: str
    format: str
    attention: List[AttnView]
    mlp: List[MlpView]
    positions_source: str
    structure: Optional[Dict] = None  # core.structure.structure_report of the loaded model


# ----------------------------------------------------------------------------- loading
def load_fairseq(path: str, data: Optional[str] = None) -> Loaded:
    """A fairseq checkpoint through ``fairseq_adapter.checkpoints.load`` (the model resized to the stored shapes,
    plus a dense one built from the same config). Head positions are known when the checkpoint
    records them (``neuroprune_finalize.kept_heads``, written by ``dsp_finalize`` and
    ``head_importance``; or ``task_state.neuroprune_kept_heads``, saved by the NeuroPrune task
    after each pruning), or trivially when a module has all its heads."""
    from ..core.policy import structure
    from ..fairseq_adapter.checkpoints import load
    from ..fairseq_adapter.sites import attention_sites, mlp_sites

    ck = load(path, data)
    state, model, dense = ck.state, ck.model, ck.dense()
    measured = structure(attention_sites(model), mlp_sites(model))
    _unstructure_(model)  # removed input columns / output rows back in place, as zeros: the views show where
    sites = attention_sites(model)
    recorded = (state.get("neuroprune_finalize") or {}).get("kept_heads")
    source = "checkpoint (neuroprune_finalize.kept_heads)"
    by_name = (state.get("task_state") or {}).get("neuroprune_kept_heads")
    if recorded is None and by_name is not None:
        recorded = [by_name.get(site.name) for site in sites]
        source = "checkpoint (task_state.neuroprune_kept_heads)"
    if recorded is not None and len(recorded) != len(sites):
        raise ValueError(f"{path}: neuroprune_finalize.kept_heads lists {len(recorded)} modules, the model has {len(sites)}")
    dense_attn = {s.name: s for s in attention_sites(dense)}
    dense_mlp = {s.name: s for s in mlp_sites(dense)}
    attention = []
    for i, site in enumerate(sites):
        d = dense_attn[site.name]
        q, k, v, o = (lin.weight.detach() for lin in (site.q, site.k, site.v, site.out))
        dense_w = sum(lin.weight.numel() for lin in (d.q, d.k, d.v, d.out))
        dense_heads = d.num_heads
        if recorded is not None and recorded[i] is not None:
            kept = sorted(int(h) for h in recorded[i])
            if len(kept) > site.num_heads:
                raise ValueError(f"{path}: the record lists {len(kept)} heads for {site.name}, which holds {site.num_heads}")
        else:
            kept = list(range(dense_heads)) if site.num_heads == dense_heads else None
        attention.append(AttnView(site.name, site.kind, q, k, v, o, site.head_dim, dense_heads, dense_w, kept))
    mlp = []
    for site in mlp_sites(model):
        d = dense_mlp[site.name]
        mlp.append(MlpView(site.name, site.kind, [f.weight.detach() for f in site.fc1], site.fc2.weight.detach(),
                           d.dense_dim, sum(f.weight.numel() for f in d.fc1) + d.fc2.weight.numel()))
    return Loaded(path, "fairseq", attention, mlp, source if recorded is not None else "not recorded", measured)


def load_hf(path: str) -> Loaded:
    """A ``save_pruned`` folder (head positions from its record) or a plain HF folder."""
    import transformers

    from ..hf.io import RECORD, load_pruned
    from ..hf.roles import attention_sites, mlp_sites

    if os.path.exists(os.path.join(path, RECORD)):
        model, source = load_pruned(path), f"{RECORD}"
    elif os.path.exists(os.path.join(path, "config.json")):
        config = transformers.AutoConfig.from_pretrained(path)
        arch = (getattr(config, "architectures", None) or [None])[0]
        if arch is None or not hasattr(transformers, arch):
            raise ValueError(f"{path}: config.json names no transformers architecture ({arch!r}); "
                             "save the model with neuroprune_fairseq.hf.save_pruned or save_pretrained")
        model, source = getattr(transformers, arch).from_pretrained(path).eval(), "not recorded"
    else:
        raise FileNotFoundError(f"{path}: neither {RECORD} (neuroprune_fairseq.hf.save_pruned) nor config.json "
                                "(save_pretrained) is in this folder")
    from ..core.policy import structure

    measured = structure(attention_sites(model), mlp_sites(model))
    _unstructure_(model)
    with torch.device("meta"):  # dense shapes only, no memory
        dense = type(model)(model.config)
    dense_attn = {s.name: s for s in attention_sites(dense)}
    dense_mlp = {s.name: s for s in mlp_sites(dense)}
    recorded = source != "not recorded"
    attention = []
    for s in attention_sites(model):
        d = dense_attn[s.name]
        dense_w = sum(lin.weight.numel() for lin in (d.q, d.k, d.v, d.out))
        kept = list(s.kept_heads) if recorded or s.num_heads == d.num_heads else None
        attention.append(AttnView(s.name, s.kind, s.q.weight.detach(), s.k.weight.detach(), s.v.weight.detach(),
                                  s.out.weight.detach(), s.head_dim, d.num_heads, dense_w, kept))
    mlp = []
    for s in mlp_sites(model):
        d = dense_mlp[s.name]
        mlp.append(MlpView(s.name, s.kind, [f.weight.detach() for f in s.fc1], s.fc2.weight.detach(),
                           d.fc2.weight.shape[1], sum(f.weight.numel() for f in d.fc1) + d.fc2.weight.numel()))
    return Loaded(path, "hf", attention, mlp, source, measured)


def _unstructure_(model) -> None:
    """Removed input columns and output rows of ``StructuredLinear`` layers back as zeros (the
    report shows zeros where they are; the structure figures were measured before)."""
    from ..core.structured_linear import unstructure_linear_

    for m in list(model.modules()):
        unstructure_linear_(m)


def load_any(path: str, data: Optional[str] = None) -> Loaded:
    if os.path.isdir(path):
        return load_hf(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file or HF folder")
    return load_fairseq(path, data)
