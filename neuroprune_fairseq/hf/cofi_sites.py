"""Where CoFi's masks act in a HuggingFace model: the per-layer structure CoFi prunes, found
from :mod:`neuroprune_fairseq.hf.roles` (attention and MLP sites) plus a small local table of
what ``roles.py`` does not declare yet (embedding tables, LayerNorms, the Linear layers outside
the encoder that read the hidden stream). The local table could move into ``roles.py``.

Supported: the BERT family table (``bert``, ``roberta``, ``xlm-roberta``, ``camembert``,
``electra`` without an embedding projection), encoder-only (no cross-attention), with a base
model or a sequence-classification head (the BERT pooler; RoBERTa's / ELECTRA's
``classifier.dense``). Other heads reading the hidden stream (MLM, QA) are not handled by the
hidden-dimension removal.
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

from torch import nn

from .roles import AttentionSite, MlpSite, attention_sites, family_of, mlp_sites


def _get(module: nn.Module, path: str):
    """The submodule at dotted ``path`` (None when absent)."""
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


@dataclass(frozen=True)
class CoFiRoles:
    """Names relative to the base model (``embeddings``, ``readers``), to the attention module
    (``attn_norm``), to the MLP block (``mlp_norm``), or to the task model (``head_readers``)."""

    embeddings: Tuple[str, ...]
    embedding_norm: str
    attn_norm: str
    mlp_norm: str
    readers: Tuple[str, ...]
    head_readers: Tuple[str, ...]
    #: a base-model submodule whose presence means the embeddings are not hidden-sized
    unsupported: Tuple[str, ...] = ()


BERT_COFI = CoFiRoles(
    embeddings=("embeddings.word_embeddings", "embeddings.position_embeddings", "embeddings.token_type_embeddings"),
    embedding_norm="embeddings.LayerNorm",
    attn_norm="output.LayerNorm",
    mlp_norm="output.LayerNorm",
    readers=("pooler.dense",),
    head_readers=("classifier.dense",),
    unsupported=("embeddings_project",),
)

#: ``roles.Family.name`` -> CoFi's extra roles (local until ``roles.py`` declares them)
COFI_ROLES: Dict[str, CoFiRoles] = {"bert": BERT_COFI}


@dataclass
class CoFiLayer:
    attn: AttentionSite
    mlp: MlpSite
    attn_norm: nn.LayerNorm
    mlp_norm: nn.LayerNorm


@dataclass
class CoFiStructure:
    """The units CoFi masks: ``layers`` (attention + MLP per encoder layer), the embedding
    tables and LayerNorm, and the Linear layers outside the encoder reading the hidden stream."""

    layers: List[CoFiLayer]
    embeddings: List[nn.Embedding]
    embedding_norm: nn.LayerNorm
    readers: List[nn.Linear]
    hidden: int
    heads: int
    head_dim: int
    intermediate: int

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def cofi_structure(model: nn.Module) -> CoFiStructure:
    """The :class:`CoFiStructure` of a dense BERT-family model, or a ValueError naming what
    is not supported."""
    fam = family_of(model)
    roles = COFI_ROLES.get(fam.name)
    if roles is None:
        raise ValueError(f"CoFi has no table for the {fam.name!r} family (supported: {sorted(COFI_ROLES)}); "
                         "add one to neuroprune_fairseq.hf.cofi_sites.COFI_ROLES")
    base = getattr(model, "base_model", model)
    for name in roles.unsupported:
        if _get(base, name) is not None:
            raise ValueError(f"CoFi: {type(model).__name__} has {name!r} (embeddings narrower than the hidden size); "
                             "not supported")
    attn = attention_sites(model)
    if any(s.kind != "encoder" for s in attn):
        raise ValueError("CoFi supports encoder-only models (this one has cross-attention)")
    mlps = mlp_sites(model)
    if not attn or len(attn) != len(mlps):
        raise ValueError(f"CoFi: {len(attn)} attention modules and {len(mlps)} MLP blocks; expected one each per layer")
    layers = []
    for a, m in zip(attn, mlps):
        if not a.name.startswith(m.name + ".") or len(m.fc1) != 1:
            raise ValueError(f"CoFi: cannot pair attention {a.name} with MLP block {m.name}")
        an, mn = _get(a.module, roles.attn_norm), _get(m.module, roles.mlp_norm)
        if not isinstance(an, nn.LayerNorm) or not isinstance(mn, nn.LayerNorm):
            raise ValueError(f"CoFi: no LayerNorm at {a.name}.{roles.attn_norm} / {m.name}.{roles.mlp_norm}")
        layers.append(CoFiLayer(a, m, an, mn))
    heads = {s.num_heads for s in attn}
    dense = all(s.num_heads == s.dense_heads for s in attn) and all(m.fc1[0].out_features == m.dense_dim for m in mlps)
    widths = {m.fc1[0].out_features for m in mlps}
    if len(heads) != 1 or len(widths) != 1 or not dense:
        raise ValueError("CoFi starts from a dense model (same head count and FFN width in every layer)")
    embeddings = [_get(base, n) for n in roles.embeddings]
    embeddings = [e for e in embeddings if isinstance(e, nn.Embedding)]
    norm = _get(base, roles.embedding_norm)
    hidden = attn[0].q.in_features
    if not embeddings or not isinstance(norm, nn.LayerNorm) or any(e.embedding_dim != hidden for e in embeddings):
        raise ValueError(f"CoFi: no hidden-sized embeddings / LayerNorm at {roles.embeddings} / {roles.embedding_norm}")
    readers = [_get(base, n) for n in roles.readers] + [_get(model, n) for n in roles.head_readers]
    readers = [r for r in readers if isinstance(r, nn.Linear) and r.in_features == hidden]
    return CoFiStructure(layers, embeddings, norm, readers, hidden, heads.pop(), attn[0].head_dim, widths.pop())

