"""CoFi's end of pruning: the masks applied by physical removal (CoFi's ``update_params`` +
``prune_model_with_z``), on our sites, with NeuroPrune's surgery.

:func:`apply_cofi_masks_` first folds the non-zero mask values into the weights, which is exact
because each mask multiplies a linear map's input or output: a head's value into its v rows and
bias (``P (z V) = z P V``), a whole attention layer's into the out projection's weight and bias,
an FFN dimension's into the FFN output Linear's column, a whole FFN layer's into that Linear's
weight and bias. Then it removes: heads with NeuroPrune's surgery
(:func:`neuroprune_fairseq.core.policy.prune_site_heads_`), FFN dimensions by slicing the FFN
Linear layers (:func:`neuroprune_fairseq.core.surgery.prune_linear_`), hidden dimensions by
slicing the embedding tables, every LayerNorm of the hidden stream, the input columns of q, k, v,
the FFN input Linear and the readers (pooler), and the output rows of the attention and FFN
output Linear layers. Parameters keep their identity (``p.data`` is replaced).

A whole attention (FFN) layer whose mask is 0, or with no head (dimension) left, keeps one
zeroed placeholder head (dimension); the out-projection (FFN output) bias stays, times the
layer mask (0 for a removed layer, so the block adds 0 to the residual), and the LayerNorm
still runs: what the masked model computes (CoFi's pruned model skips that LayerNorm too, so
its masked and pruned models differ there; ours are equal). ``config.hidden_size`` is left as it was;
:func:`neuroprune_fairseq.hf.io.save_pruned` records the narrower embeddings and LayerNorms and
:func:`~neuroprune_fairseq.hf.io.load_pruned` rebuilds them (the remote code does not yet).
"""
from typing import Dict, Optional, Union

import torch
from torch import Tensor, nn

from ..core.policy import prune_site_heads_
from ..core.surgery import prune_linear_, zero_heads_
from .cofi import TYPES, CoFiMasks
from .cofi_sites import cofi_structure
from .roles import attention_sites, mlp_sites

__all__ = ["apply_cofi_masks_", "matrix_size"]


def _slice_(param: Tensor, dim: int, idx: Tensor) -> None:
    with torch.no_grad():
        param.data = param.data.index_select(dim, idx.to(param.device)).contiguous()


def _check_masks(zs: Dict[str, Tensor], structure) -> Dict[str, Tensor]:
    L, H, d, Fd = structure.num_layers, structure.heads, structure.hidden, structure.intermediate
    shapes = {"head": (L, H), "head_layer": (L,), "intermediate": (L, Fd), "mlp": (L,), "hidden": (d,)}
    out = {}
    for t in TYPES:
        z = zs.get(t)
        z = torch.ones(shapes[t]) if z is None else z.detach().float().cpu().reshape(shapes[t])
        if bool((z < 0).any()) or bool((z > 1).any()):
            raise ValueError(f"CoFi mask {t!r} has values outside [0, 1]")
        out[t] = z
    if bool(((out["hidden"] != 0) & (out["hidden"] != 1)).any()):
        raise ValueError("the hidden mask must be 0/1 (CoFiMasks.deterministic_masks() gives that); a soft "
                         "per-dimension scale cannot be folded through the LayerNorms")
    if not bool((out["hidden"] > 0).any()):
        raise ValueError("the hidden mask removes every hidden dimension; lower the target sparsity")
    return out


def apply_cofi_masks_(model: nn.Module, masks: Union[CoFiMasks, Dict[str, Tensor]],
                      optimizer: Optional[torch.optim.Optimizer] = None) -> Dict:
    """Remove what ``masks`` (a :class:`CoFiMasks`, whose deterministic masks are used and whose
    hooks are detached, or a dict of mask tensors per type) masks out; see the module doc.
    Returns what is left: heads / FFN dimensions per layer, hidden dimensions, the layers whose
    attention / FFN is gone, and the q/k/v/out + fc1/fc2 weight count."""
    if isinstance(masks, CoFiMasks):
        masks.detach()
        zs = masks.deterministic_masks()
    else:
        zs = masks
    s = cofi_structure(model)
    zs = _check_masks(zs, s)
    hd = s.head_dim
    heads_left, dims_left, attn_gone, ffn_gone = [], [], [], []
    with torch.no_grad():
        for i, layer in enumerate(s.layers):
            a, m = layer.attn, layer.mlp
            head_z, mha = zs["head"][i], zs["head_layer"][i]
            # fold the soft values (exact), then remove the zeros
            scale = head_z.repeat_interleave(hd).to(a.v.weight.dtype)
            a.v.weight.mul_(scale.unsqueeze(1).to(a.v.weight.device))
            if a.v.bias is not None:
                a.v.bias.mul_(scale.to(a.v.bias.device))
            a.out.weight.mul_(float(mha))
            if a.out.bias is not None:
                a.out.bias.mul_(float(mha))
            keep = (head_z * mha).nonzero().flatten().tolist()
            if not keep:
                zero_heads_(a.q, a.k, a.v, a.out, hd, [0])  # its bias stays, times mha (as masked)
                attn_gone.append(i)
            prune_site_heads_(a, keep or [0], optimizer)
            heads_left.append(len(keep))

            fc1, fc2 = m.fc1[0], m.fc2
            int_z, mlp = zs["intermediate"][i], zs["mlp"][i]
            fc2.weight.mul_((int_z * mlp).to(fc2.weight.dtype).to(fc2.weight.device))
            if fc2.bias is not None:
                fc2.bias.mul_(float(mlp))
            keep = (int_z * mlp).nonzero().flatten()
            if keep.numel() == 0:
                fc1.weight[0].zero_()
                if fc1.bias is not None:
                    fc1.bias[0] = 0.0
                fc2.weight[:, 0].zero_()  # its bias stays, times the mlp mask (as masked)
                ffn_gone.append(i)
            if not hasattr(m.module, "_np_dense_dim"):
                m.module._np_dense_dim = fc1.out_features
            idx = keep if keep.numel() else torch.zeros(1, dtype=torch.long)
            if idx.numel() < fc1.out_features:
                prune_linear_(fc1, 0, idx.to(fc1.weight.device), optimizer)
                prune_linear_(fc2, 1, idx.to(fc2.weight.device), optimizer)
            dims_left.append(int(keep.numel()))

        hidden = zs["hidden"].nonzero().flatten()
        if hidden.numel() < s.hidden:
            for e in s.embeddings:
                _slice_(e.weight, 1, hidden)
                e.embedding_dim = hidden.numel()
            for norm in [s.embedding_norm] + [n for layer in s.layers for n in (layer.attn_norm, layer.mlp_norm)]:
                _slice_(norm.weight, 0, hidden)
                _slice_(norm.bias, 0, hidden)
                norm.normalized_shape = (hidden.numel(),)
            for layer in s.layers:
                for lin in (layer.attn.q, layer.attn.k, layer.attn.v, layer.mlp.fc1[0]):
                    prune_linear_(lin, 1, hidden.to(lin.weight.device), optimizer)
                for lin in (layer.attn.out, layer.mlp.fc2):
                    prune_linear_(lin, 0, hidden.to(lin.weight.device), optimizer)
            for lin in s.readers:
                prune_linear_(lin, 1, hidden.to(lin.weight.device), optimizer)
    return {"heads_per_layer": heads_left, "ffn_dims_per_layer": dims_left, "hidden_dims": int(hidden.numel()),
            "attention_layers_removed": attn_gone, "ffn_layers_removed": ffn_gone,
            "remaining_size": CoFiMasks.remaining_size(zs, hd), "matrix_size": matrix_size(model, attn_gone, ffn_gone)}


def matrix_size(model: nn.Module, attention_removed=(), ffn_removed=()) -> int:
    """q/k/v/out and fc1/fc2 weights present in the model's shapes, not counting the zeroed
    placeholders of the layers listed as removed (what :meth:`CoFiMasks.remaining_size` counts)."""
    n = 0
    for i, (a, m) in enumerate(zip(attention_sites(model), mlp_sites(model))):
        if i not in attention_removed:
            n += sum(lin.weight.numel() for lin in (a.q, a.k, a.v, a.out))
        if i not in ffn_removed:
            n += sum(lin.weight.numel() for lin in m.fc1 + [m.fc2])
    return n
