"""Where NeuroPrune's sites live in fairseq models, declared once, and all the fairseq glue:
typed sites, the head-count switch after surgery, fused-path switching, reshaping on load, and
the model facade of the torch-only core (:class:`FairseqModel`: pruning, counts, sparsity).

Roles: an attention module (fairseq ``MultiheadAttention``) provides q, k, v, out;
an MLP block (a transformer layer) provides fc1, fc2. Kinds: ``encoder`` (encoder
self-attention / FFN), ``decoder`` (decoder self-attention / FFN), ``cross``
(encoder-decoder attention).
"""
import logging
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from fairseq.modules import MultiheadAttention

from ..core import resize_linear_
from ..core.facade import PrunableModel
from ..core.policy import HeadPruneResult
from ..core.sites import ATTN_KINDS, MLP_KINDS, AttentionSite, MlpSite
from ..core.sparsity import SparsityReport
from ..core.structured_linear import StructuredLinear, as_structured_like_, full_in
from .fairseq_optim import torch_optimizer

logger = logging.getLogger(__name__)

ATTN_ROLES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}
MLP_ROLES = {"fc1": "fc1", "fc2": "fc2"}


@dataclass
class FairseqAttentionSite(AttentionSite):
    """A fairseq ``MultiheadAttention``: its head count is ``num_heads``, its dense attention
    width is its input width."""

    @property
    def head_dim(self) -> int:
        return self.module.head_dim

    @property
    def num_heads(self) -> int:
        return self.module.num_heads

    @property
    def dense_heads(self) -> int:
        return dense_head_count(self.module)

    def _set_head_count_(self, kept_original: List[int]) -> None:
        set_num_heads_(self.module, len(kept_original))


@dataclass
class FairseqMlpSite(MlpSite):
    """A fairseq transformer layer's ``fc1``/``fc2``; finalisation can shrink them, the dense
    width is in the config (the layer's, or for decoder layers, which keep none, the model's)."""

    model_cfg: object = None

    @property
    def dense_dim(self) -> int:
        return dense_ffn_dim(self.module, self.model_cfg)


def _kind(name: str, module: nn.Module) -> str:
    if getattr(module, "encoder_decoder_attention", False):
        return "cross"
    return "encoder" if name.startswith("encoder.") or ".encoder." in name else "decoder"


def attention_sites(model: nn.Module, kinds: Sequence[str] = ATTN_KINDS) -> List[FairseqAttentionSite]:
    """Every fairseq MultiheadAttention of ``model`` (in model order) whose kind is in ``kinds``."""
    return [
        FairseqAttentionSite(name, _kind(name, m), m, *(getattr(m, ATTN_ROLES[r]) for r in ("q", "k", "v", "out")))
        for name, m in model.named_modules()
        if isinstance(m, MultiheadAttention) and _kind(name, m) in kinds
    ]


def mlp_sites(model: nn.Module, kinds: Sequence[str] = MLP_KINDS) -> List[FairseqMlpSite]:
    """Every module with ``fc1``/``fc2`` Linear layers whose kind is in ``kinds``."""
    out = []
    for name, m in model.named_modules():
        fc1, fc2 = getattr(m, MLP_ROLES["fc1"], None), getattr(m, MLP_ROLES["fc2"], None)
        if isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear):
            kind = "encoder" if name.startswith("encoder.") else "decoder"
            if kind in kinds:
                out.append(FairseqMlpSite(name, kind, m, [fc1], fc2, model_cfg=getattr(model, "cfg", None)))
    return out


def attention_modules(model: nn.Module, kinds: Sequence[str] = ATTN_KINDS) -> List[Tuple[str, str, MultiheadAttention]]:
    """``(name, kind, module)`` of :func:`attention_sites`."""
    return [(s.name, s.kind, s.module) for s in attention_sites(model, kinds)]


def mlp_modules(model: nn.Module, kinds: Sequence[str] = MLP_KINDS) -> List[Tuple[str, str, nn.Module]]:
    """``(name, kind, layer)`` of :func:`mlp_sites`."""
    return [(s.name, s.kind, s.module) for s in mlp_sites(model, kinds)]


def set_num_heads_(mha: MultiheadAttention, num_heads: int) -> None:
    """Make a fairseq MultiheadAttention consistent with q/k/v holding ``num_heads`` heads.

    A module with fewer heads than its input width must skip the embed-dim assertion and
    torch's fused ``F.multi_head_attention_forward`` path, which assumes the original
    shapes (the same switch fairseq's own ``_adaptive_prune_heads`` uses).
    """
    mha.num_heads = num_heads
    mha.embed_dim = mha.head_dim * num_heads
    if mha.embed_dim != full_in(getattr(mha, ATTN_ROLES["q"])):
        mha.skip_embed_dim_check = True


def resize_to_state_dict_(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """Reshape a dense-built model so a pruned/finalised state dict loads into it:
    every Linear whose stored weight has another shape is resized, and attention modules
    take their head count from their q_proj rows."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            prefix = f"{name}." if name else ""
            w = state_dict.get(f"{prefix}weight")
            if w is not None and tuple(w.shape) != tuple(m.weight.shape):
                resize_linear_(m, w.shape[0], w.shape[1])
            as_structured_like_(m, state_dict, prefix)  # inputs / outputs removed by finalize
    for s in attention_sites(model):
        rows = s.q.weight.shape[0]
        if rows % s.head_dim:
            raise ValueError(f"{s.name}: q_proj has {rows} rows, not a multiple of head_dim {s.head_dim}")
        if rows // s.head_dim != s.num_heads:
            set_num_heads_(s.module, rows // s.head_dim)
    disable_fused_paths_(model)


def disable_fused_paths_(model: nn.Module) -> None:
    """fairseq versions with the BetterTransformer encoder path
    (``torch._transformer_encoder_layer_fwd``, flag ``BT_version``) take it in eval mode and it
    assumes the layer's original shapes; layers whose attention or MLP was resized must not.
    Attention modules with removed inputs or outputs (:class:`StructuredLinear`) must not take
    torch's fused ``F.multi_head_attention_forward`` either: it reads the weights, not the layers."""
    for s in attention_sites(model):
        if any(isinstance(lin, StructuredLinear) for lin in (s.q, s.k, s.v, s.out)):
            s.module.skip_embed_dim_check = True
    for m in model.modules():
        if getattr(m, "BT_version", False):
            attn, fc1 = getattr(m, "self_attn", None), getattr(m, MLP_ROLES["fc1"], None)
            pruned = attn is not None and attn.num_heads != dense_head_count(attn)
            shrunk = fc1 is not None and fc1.weight.shape[0] != dense_ffn_dim(m)
            structured = any(isinstance(x, StructuredLinear) for x in m.modules())
            if pruned or shrunk or structured:
                m.BT_version = False


def dense_head_count(mha: MultiheadAttention) -> int:
    """Heads the module had before pruning (its attention width equals its input width)."""
    return full_in(getattr(mha, ATTN_ROLES["q"])) // mha.head_dim


def dense_ffn_dim(layer: nn.Module, model_cfg=None) -> int:
    """The FFN width of a transformer layer in the dense model, from its config (fairseq's
    decoder layers keep none: then from the model's config ``model_cfg``)."""
    cfg = getattr(layer, "cfg", None) or model_cfg
    side = "encoder" if type(layer).__name__.startswith("TransformerEncoder") else "decoder"
    try:
        return int(getattr(cfg, side).ffn_embed_dim)
    except AttributeError:
        return getattr(layer, MLP_ROLES["fc1"]).weight.shape[0]


# ------------------------------------------------------------ the core's facade on a fairseq model
class FairseqModel(PrunableModel):
    """:class:`neuroprune_fairseq.core.facade.PrunableModel` for a fairseq model: its sites are
    its ``MultiheadAttention`` modules and transformer layers; the surgery takes the optimizer as
    the caller passes it (open :func:`.fairseq_optim.optimizer_surgery` around it: it reaches
    the fp32 master copy under ``--fp16`` / ``--bf16``); after head surgery the fused paths that
    assume the original shapes are switched off."""

    find_attention_sites = staticmethod(attention_sites)
    find_mlp_sites = staticmethod(mlp_sites)
    torch_optimizer = staticmethod(torch_optimizer)

    @classmethod
    def surgery_optimizer(cls, optimizer):
        return optimizer

    def after_head_surgery_(self) -> None:
        disable_fused_paths_(self.model)


def head_counts(model: nn.Module) -> List[int]:
    """Heads present in every attention module, in model order."""
    return FairseqModel(model).head_counts()


def prune_redundant_heads_(
    model: nn.Module,
    theta: float,
    method: str = "heuristic",
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> List[HeadPruneResult]:
    """ELIM_REDUNDANT on every attention module of ``model``, with physical removal."""
    return FairseqModel(model).prune_redundant_heads_(theta, method, optimizer)


def matrices(model: nn.Module) -> List[torch.Tensor]:
    """The attention (q, k, v, out) and MLP (fc1, fc2) weight matrices."""
    return FairseqModel(model).matrices()


def dense_matrix_count(model: nn.Module) -> int:
    """Weights of the attention + MLP matrices in the dense (unpruned) model."""
    return FairseqModel(model).dense_matrix_count()


def pad_to_dense_(model: nn.Module) -> Dict[str, int]:
    """:func:`neuroprune_fairseq.core.policy.pad_sites_to_dense_` on every attention module and MLP
    block: a pruned/finalised model back at its dense shapes, zeros in place of what was removed."""
    return FairseqModel(model).pad_to_dense_()


def model_sparsity(model: nn.Module) -> SparsityReport:
    return FairseqModel(model).sparsity()


def _configured_heads(model: nn.Module, kind: str) -> Optional[int]:
    """The head count the model's config gives modules of ``kind`` (None if it has no config)."""
    cfg = getattr(model, "cfg", None)
    side = getattr(cfg, "encoder" if kind == "encoder" else "decoder", None)
    n = getattr(side, "attention_heads", None)
    return int(n) if n else None


def kept_heads_record(model: nn.Module) -> Dict[str, Optional[List[int]]]:
    """Per attention module (by name): the original indices of the heads it still holds, as
    the surgery recorded them; ``list(range(n))`` for a module with all its configured heads;
    None where it is not known (a pruned checkpoint resumed without its record)."""
    out: Dict[str, Optional[List[int]]] = {}
    for s in attention_sites(model):
        dense = _configured_heads(model, s.kind)
        recorded = getattr(s.module, "_np_kept_heads", None)
        if recorded is not None and getattr(s.module, "_np_dense_heads", None) == dense and len(recorded) == s.num_heads:
            out[s.name] = [int(h) for h in recorded]
        elif s.num_heads == dense:
            out[s.name] = list(range(dense))
        else:
            out[s.name] = None
    return out
