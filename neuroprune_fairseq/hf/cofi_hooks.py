"""The forward hooks that apply :class:`~neuroprune_fairseq.hf.cofi.CoFiMasks` to a HF BERT-family
model, where CoFi's forked ``modeling_bert.py`` multiplies:

* a forward pre-hook on the base model draws the masks of the pass (sampled in training,
  deterministic in eval, or ``masks.fixed``) into ``masks.current``;
* ``head`` on the attention out projection's input (head h's slice; ``(z P) V = z (P V)``);
  ``head_layer`` and ``hidden`` on its output (bias included, as CoFi's ``CoFiBertSelfOutput``);
* ``intermediate`` on the FFN output Linear's input, ``mlp`` and ``hidden`` on its output;
* ``hidden`` on the embedding sum (the embedding LayerNorm's input), and every LayerNorm of the
  hidden stream normalises only the dimensions whose hidden mask is non-zero, then is
  multiplied by the mask (CoFi's ``CoFiLayerNorm``).
"""
from typing import List

import torch
import torch.nn.functional as F
from torch import nn


def _norm_hook(masks):
    def hook(module, args, output):
        z = masks.current["hidden"] if masks.current is not None else None
        if z is None:
            return None
        z = z.to(device=output.device, dtype=output.dtype)
        keep = z != 0
        if bool(keep.all()):
            return output * z
        idx = keep.nonzero().flatten()
        x = args[0]
        y = F.layer_norm(x.index_select(-1, idx), (idx.numel(),), module.weight.index_select(0, idx),
                         module.bias.index_select(0, idx), module.eps)
        return output.new_zeros(output.shape).index_copy(-1, idx, y) * z

    return hook


def install_hooks(model: nn.Module, masks) -> List:
    """Register every hook; returns the handles (``masks.detach()`` removes them)."""
    s = masks.structure
    base = getattr(model, "base_model", model)
    handles = []

    def draw(module, args):
        masks.current = masks.masks(training=module.training)

    def z(t, i=None):
        m = masks.current[t]
        return m if i is None else m[i]

    def on(m, x):
        return m.to(device=x.device, dtype=x.dtype)

    handles.append(base.register_forward_pre_hook(draw))
    handles.append(s.embedding_norm.register_forward_pre_hook(
        lambda mod, args: (args[0] * on(z("hidden"), args[0]),) + tuple(args[1:])))
    norms = [s.embedding_norm] + [n for layer in s.layers for n in (layer.attn_norm, layer.mlp_norm)]
    for n in norms:
        handles.append(n.register_forward_hook(_norm_hook(masks)))
    hd = s.head_dim
    for i, layer in enumerate(s.layers):
        def head_in(mod, args, i=i):
            return (args[0] * on(z("head", i), args[0]).repeat_interleave(hd),) + tuple(args[1:])

        def head_out(mod, args, out, i=i):
            return out * on(z("head_layer", i) * z("hidden"), out)

        def int_in(mod, args, i=i):
            return (args[0] * on(z("intermediate", i), args[0]),) + tuple(args[1:])

        def mlp_out(mod, args, out, i=i):
            return out * on(z("mlp", i) * z("hidden"), out)

        handles += [layer.attn.out.register_forward_pre_hook(head_in), layer.attn.out.register_forward_hook(head_out),
                    layer.mlp.fc2.register_forward_pre_hook(int_in), layer.mlp.fc2.register_forward_hook(mlp_out)]
    return handles


@torch.no_grad()
def masked_logits(model: nn.Module, masks, inputs: dict):
    """The logits of ``model`` under ``masks`` attached for one eval pass (a helper for checks)."""
    attached = bool(masks.handles)
    if not attached:
        masks.attach(model)
    try:
        return model(**inputs).logits
    finally:
        if not attached:
            masks.detach()
