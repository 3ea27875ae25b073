"""Where NeuroPrune's roles live in fairseq models, declared once, and the thin glue that
applies the torch-only core to them.

Roles: an attention module (fairseq ``MultiheadAttention``) provides q, k, v, out;
an MLP block (a transformer layer) provides fc1, fc2. Kinds: ``encoder`` (encoder
self-attention / FFN), ``decoder`` (decoder self-attention / FFN), ``cross``
(encoder-decoder attention).
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from fairseq.modules import MultiheadAttention

from .core import elim_redundant_, resize_linear_, sparsity_report
from .core.redundancy import RedundancyPlan

logger = logging.getLogger(__name__)

ATTN_ROLES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "out": "out_proj"}
MLP_ROLES = {"fc1": "fc1", "fc2": "fc2"}
ATTN_KINDS = ("encoder", "decoder", "cross")
MLP_KINDS = ("encoder", "decoder")


def _kind(name: str, module: nn.Module) -> str:
    if getattr(module, "encoder_decoder_attention", False):
        return "cross"
    return "encoder" if name.startswith("encoder.") or ".encoder." in name else "decoder"


def attention_modules(model: nn.Module, kinds: Sequence[str] = ATTN_KINDS) -> List[Tuple[str, str, MultiheadAttention]]:
    """``(name, kind, module)`` for every fairseq MultiheadAttention, in model order."""
    return [
        (name, _kind(name, m), m)
        for name, m in model.named_modules()
        if isinstance(m, MultiheadAttention) and _kind(name, m) in kinds
    ]


def mlp_modules(model: nn.Module, kinds: Sequence[str] = MLP_KINDS) -> List[Tuple[str, str, nn.Module]]:
    """``(name, kind, layer)`` for every module with ``fc1``/``fc2`` Linear layers."""
    out = []
    for name, m in model.named_modules():
        fc1, fc2 = getattr(m, MLP_ROLES["fc1"], None), getattr(m, MLP_ROLES["fc2"], None)
        if isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear):
            kind = "encoder" if name.startswith("encoder.") else "decoder"
            if kind in kinds:
                out.append((name, kind, m))
    return out


def attn_linears(mha: nn.Module) -> Tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
    return tuple(getattr(mha, ATTN_ROLES[r]) for r in ("q", "k", "v", "out"))


def set_num_heads_(mha: MultiheadAttention, num_heads: int) -> None:
    """Make a fairseq MultiheadAttention consistent with q/k/v holding ``num_heads`` heads.

    A module with fewer heads than its input width must skip the embed-dim assertion and
    torch's fused ``F.multi_head_attention_forward`` path, which assumes the original
    shapes (the same switch fairseq's own ``_adaptive_prune_heads`` uses).
    """
    mha.num_heads = num_heads
    mha.embed_dim = mha.head_dim * num_heads
    if mha.embed_dim != mha.q_proj.in_features:
        mha.skip_embed_dim_check = True


def resize_to_state_dict_(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> None:
    """Reshape a dense-built model so a pruned/finalised state dict loads into it:
    every Linear whose stored weight has another shape is resized, and attention modules
    take their head count from their q_proj rows."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            w = state_dict.get(f"{name}.weight" if name else "weight")
            if w is not None and tuple(w.shape) != tuple(m.weight.shape):
                resize_linear_(m, w.shape[0], w.shape[1])
    for name, _, mha in attention_modules(model):
        rows = mha.q_proj.weight.shape[0]
        if rows % mha.head_dim:
            raise ValueError(f"{name}: q_proj has {rows} rows, not a multiple of head_dim {mha.head_dim}")
        if rows // mha.head_dim != mha.num_heads:
            set_num_heads_(mha, rows // mha.head_dim)
    disable_fused_paths_(model)


def disable_fused_paths_(model: nn.Module) -> None:
    """fairseq versions with the BetterTransformer encoder path
    (``torch._transformer_encoder_layer_fwd``, flag ``BT_version``) take it in eval mode and it
    assumes the layer's original shapes; layers whose attention or MLP was resized must not."""
    for m in model.modules():
        if getattr(m, "BT_version", False):
            attn, fc1 = getattr(m, "self_attn", None), getattr(m, "fc1", None)
            pruned = attn is not None and attn.num_heads != dense_head_count(attn)
            shrunk = fc1 is not None and fc1.weight.shape[0] != dense_ffn_dim(m)
            if pruned or shrunk:
                m.BT_version = False


def head_counts(model: nn.Module) -> List[int]:
    return [m.num_heads for _, _, m in attention_modules(model)]


def dense_head_count(mha: MultiheadAttention) -> int:
    """Heads the module had before pruning (its attention width equals its input width)."""
    return mha.q_proj.in_features // mha.head_dim


def prune_redundant_heads_(
    model: nn.Module,
    theta: float,
    method: str = "heuristic",
    optimizer: Optional[torch.optim.Optimizer] = None,
) -> List[Tuple[str, RedundancyPlan]]:
    """ELIM_REDUNDANT on every attention module of ``model``, with physical removal."""
    plans = []
    for name, _, mha in attention_modules(model):
        q, k, v, out = attn_linears(mha)
        plan = elim_redundant_(q, k, v, out, mha.num_heads, theta, method, optimizer)
        if plan.removed:
            set_num_heads_(mha, len(plan.keep))
        plans.append((name, plan))
    disable_fused_paths_(model)
    return plans


def matrices(model: nn.Module) -> List[torch.Tensor]:
    """The attention (q, k, v, out) and MLP (fc1, fc2) weight matrices."""
    ws = []
    for _, _, mha in attention_modules(model):
        ws.extend(lin.weight for lin in attn_linears(mha))
    for _, _, layer in mlp_modules(model):
        ws.extend([layer.fc1.weight, layer.fc2.weight])
    return ws


def dense_ffn_dim(layer: nn.Module, owner: Optional[nn.Module] = None) -> int:
    """The FFN width a transformer layer was built with, from fairseq's config: encoder layers
    keep theirs (``layer.cfg``), decoder layers do not, so ``owner`` (the decoder, or the model)
    must be given for them. Without a config: the layer's current width."""
    side = "encoder" if type(layer).__name__.startswith("TransformerEncoder") else "decoder"
    for m in (layer, owner):
        try:
            return int(getattr(m.cfg, side).ffn_embed_dim)
        except AttributeError:
            continue
    return layer.fc1.weight.shape[0]


def dense_matrix_count(model: nn.Module) -> int:
    """Weights of the attention + MLP matrices in the dense (unpruned) model."""
    total = 0
    for _, _, mha in attention_modules(model):
        d_attn = mha.q_proj.in_features
        total += d_attn * (mha.q_proj.in_features + mha.kdim + mha.vdim) + mha.out_proj.out_features * d_attn
    for name, kind, layer in mlp_modules(model):
        d_e = dense_ffn_dim(layer, getattr(model, kind, model))  # the model's encoder/decoder holds the config
        total += d_e * layer.fc1.weight.shape[1] + layer.fc2.weight.shape[0] * d_e
    return total


def model_sparsity(model: nn.Module):
    return sparsity_report(matrices(model), dense_matrix_count(model))


def format_plans(plans: List[Tuple[str, RedundancyPlan]]) -> str:
    lines = []
    for name, plan in plans:
        removed = ",".join(f"{i}->{plan.rep[i]}" for i in plan.removed) or "-"
        lines.append(
            f"  {name}: heads {plan.num_heads}->{len(plan.keep)} kept={plan.keep} merged={removed} "
            f"min_dist={plan.min_distance:.4f} theta={plan.theta:g}"
        )
    return "\n".join(lines)
