"""``neuroprune_transformer``: fairseq's transformer, unchanged, except that it loads
checkpoints whose attention modules have different head counts (pruned) or whose MLPs
have fewer neurons (finalised). fairseq builds a model from the checkpoint's config
(dense shapes) and then calls ``load_state_dict``; this class reshapes first.

Architectures: ``neuroprune_iwslt_de_en`` (the paper's MT model, 6 heads everywhere),
``neuroprune_multi30k_cpu`` (a narrow model with the same topology for CPU runs), and
``neuroprune_<name>`` for every stock fairseq ``transformer`` architecture.
"""
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY, register_model, register_model_architecture
from fairseq.models.transformer import TransformerModel, base_architecture, transformer_iwslt_de_en

from .sites import resize_to_state_dict_


@register_model("neuroprune_transformer")
class NeuroPruneTransformerModel(TransformerModel):
    """A fairseq ``TransformerModel`` whose checkpoints may hold pruned heads/neurons."""

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        resize_to_state_dict_(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)


@register_model_architecture("neuroprune_transformer", "neuroprune_transformer")
def neuroprune_base_architecture(args):
    base_architecture(args)


def _six_head_encoder_decoder(args, width: int, ffn: int) -> None:
    """6+6 layers with 6 heads in every attention module (18 modules, 108 heads), on top of
    fairseq's IWSLT defaults; command-line values win."""
    for side in ("encoder", "decoder"):
        for key, value in (("embed_dim", width), ("ffn_embed_dim", ffn), ("attention_heads", 6), ("layers", 6)):
            setattr(args, f"{side}_{key}", getattr(args, f"{side}_{key}", value))
    transformer_iwslt_de_en(args)


@register_model_architecture("neuroprune_transformer", "neuroprune_iwslt_de_en")
def neuroprune_iwslt_de_en(args):
    """The paper's MT model: 6+6 layers, 6 heads in all 18 attention modules (108 heads).

    IWSLT-sized otherwise (FFN 1024), but the width is 528 rather than fairseq's 512:
    512 is not divisible by 6; 528 = 6 x 88 is the nearest width above it whose head dim
    is a multiple of 8 (tensor-core friendly in fp16/bf16).
    """
    _six_head_encoder_decoder(args, 528, 1024)


@register_model_architecture("neuroprune_transformer", "neuroprune_multi30k_cpu")
def neuroprune_multi30k_cpu(args):
    """Same topology (6+6 layers, 6 heads, 108 heads), narrow for 2-core CPUs: d=120, FFN 480."""
    _six_head_encoder_decoder(args, 120, 480)


def _mirror_stock_architectures():
    """``neuroprune_<arch>`` for every stock ``transformer`` arch (same defaults)."""
    for arch, model_cls in list(ARCH_MODEL_REGISTRY.items()):
        name = f"neuroprune_{arch}"
        if model_cls is TransformerModel and name not in ARCH_MODEL_REGISTRY:
            register_model_architecture("neuroprune_transformer", name)(ARCH_CONFIG_REGISTRY[arch])


_mirror_stock_architectures()
