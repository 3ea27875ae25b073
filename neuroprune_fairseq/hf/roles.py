"""Where NeuroPrune's roles live in HuggingFace models, declared once per family.

In the style of nn_pruning's per-family patterns: a table maps a module-name pattern to
the roles ``q, k, v, out`` (an attention module) or ``fc1, fc2`` (an MLP block), plus the
attribute names the HF attention module uses for its head count and inner width, and a
per-family hook for what else a head-count change needs (T5: :mod:`.t5`). Nothing here
imports transformers at import time.

Families (``config.model_type`` -> table): ``bert``, ``roberta``, ``xlm-roberta``,
``camembert``, ``electra`` -> BERT table; ``t5``, ``mt5`` -> T5 table; ``opt`` -> OPT table.
Kinds: ``encoder`` (encoder self-attention / FFN), ``decoder`` (decoder self-attention /
FFN), ``cross`` (encoder-decoder attention), the same names as the fairseq side.
"""
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..core.sites import ATTN_KINDS, MLP_KINDS, AttentionSite, MlpSite  # noqa: F401  (AttentionSite: re-exported)
from . import t5


@dataclass(frozen=True)
class AttentionRoles:
    """One kind of attention module: ``pattern`` matches its full module name."""

    pattern: str
    q: str
    k: str
    v: str
    out: str
    #: relative name of the submodule holding the head-count attributes ("" = the module)
    holder: str
    #: attribute holding the per-head width on ``holder`` (first one found wins)
    head_dim_attrs: Tuple[str, ...]
    #: attributes set to the new head count / the new inner width (``heads * head_dim``)
    heads_attrs: Tuple[str, ...]
    inner_attrs: Tuple[str, ...]
    kind: Callable[[str], str]
    #: set ``module.pruned_heads`` (transformers 4.x bookkeeping) on this relative module
    pruned_heads_owner: Optional[str] = None


@dataclass(frozen=True)
class MlpRoles:
    pattern: str
    #: one name, or two for a gated MLP (T5 v1.1 ``wi_0``/``wi_1``): every fc1 is ``[d_e, d]``
    fc1: Tuple[Tuple[str, ...], ...]
    fc2: str
    kind: Callable[[str], str]


@dataclass(frozen=True)
class Family:
    name: str
    attention: Tuple[AttentionRoles, ...]
    mlp: Tuple[MlpRoles, ...]
    #: called as ``post_prune(site, kept_original)`` after the head-count attributes are set
    post_prune: Optional[Callable[["HfAttentionSite", List[int]], None]] = None


def _enc_dec(name: str) -> str:
    return "decoder" if re.search(r"(^|\.)decoder\.", name) else "encoder"


BERT = Family(
    "bert",
    attention=(
        AttentionRoles(
            pattern=r"(^|\.)layer\.\d+\.(attention|crossattention)$",
            q="self.query", k="self.key", v="self.value", out="output.dense",
            holder="self",
            head_dim_attrs=("attention_head_size",),
            heads_attrs=("num_attention_heads",),
            inner_attrs=("all_head_size",),
            kind=lambda n: "cross" if n.endswith("crossattention") else "encoder",
            pruned_heads_owner="",
        ),
    ),
    mlp=(
        MlpRoles(pattern=r"(^|\.)layer\.\d+$", fc1=(("intermediate.dense",),), fc2="output.dense",
                 kind=lambda n: "encoder"),
    ),
)

T5 = Family(
    "t5",
    attention=(
        AttentionRoles(
            pattern=r"(^|\.)block\.\d+\.layer\.\d+\.(SelfAttention|EncDecAttention)$",
            q="q", k="k", v="v", out="o",
            holder="",
            head_dim_attrs=("key_value_proj_dim",),
            heads_attrs=("n_heads",),
            inner_attrs=("inner_dim",),
            kind=lambda n: "cross" if n.endswith("EncDecAttention") else _enc_dec(n),
            pruned_heads_owner=None,  # handled by the T5 hook (relative position bias)
        ),
    ),
    mlp=(
        # T5 v1.0 ``wi``; T5 v1.1 / mT5 / Flan-T5 gated ``wi_0`` (gate) and ``wi_1`` (linear)
        MlpRoles(pattern=r"(^|\.)block\.\d+\.layer\.\d+\.DenseReluDense$",
                 fc1=(("wi",), ("wi_0", "wi_1")), fc2="wo", kind=_enc_dec),
    ),
    post_prune=t5.after_head_change,
)

OPT = Family(
    "opt",
    attention=(
        AttentionRoles(
            pattern=r"(^|\.)layers\.\d+\.self_attn$",
            q="q_proj", k="k_proj", v="v_proj", out="out_proj",
            holder="",
            head_dim_attrs=("head_dim",),
            heads_attrs=("num_heads",),
            # 4.x OPTAttention reshapes the attention output with ``embed_dim``
            inner_attrs=("embed_dim",),
            kind=lambda n: "decoder",
        ),
    ),
    mlp=(MlpRoles(pattern=r"(^|\.)layers\.\d+$", fc1=(("fc1",),), fc2="fc2", kind=lambda n: "decoder"),),
)

FAMILIES: Dict[str, Family] = {
    "bert": BERT, "roberta": BERT, "xlm-roberta": BERT, "camembert": BERT, "electra": BERT,
    "t5": T5, "mt5": T5,
    "opt": OPT,
}


def family_of(model: nn.Module) -> Family:
    """The role table for ``model`` (from ``model.config.model_type``)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"NeuroPrune has no role table for model_type={model_type!r}; supported: {sorted(FAMILIES)}. "
            "Add a Family to neuroprune_fairseq.hf.roles.FAMILIES."
        )
    return FAMILIES[model_type]


def _get(module: nn.Module, path: str) -> Optional[nn.Module]:
    if not path:
        return module
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


@dataclass
class HfAttentionSite(AttentionSite):
    """One attention module of a HF model: the core site (:class:`neuroprune_fairseq.core.sites.AttentionSite`)
    plus its family's role table."""

    roles: AttentionRoles = None
    family: Family = None

    @property
    def holder(self) -> nn.Module:
        return _get(self.module, self.roles.holder)

    @property
    def head_dim(self) -> int:
        for attr in self.roles.head_dim_attrs:
            if hasattr(self.holder, attr):
                return int(getattr(self.holder, attr))
        raise AttributeError(f"{self.name}: none of {self.roles.head_dim_attrs} found")

    def _set_head_count_(self, kept_original: List[int]) -> None:
        """Every head-count / inner-width attribute of the family table, transformers 4.x
        ``pruned_heads`` bookkeeping, then the family's post-prune hook."""
        n, hd, holder = len(kept_original), self.head_dim, self.holder
        for attr in self.roles.heads_attrs:
            setattr(holder, attr, n)
        for attr in self.roles.inner_attrs:
            setattr(holder, attr, n * hd)
        if self.roles.pruned_heads_owner is not None:
            owner = self.module if not self.roles.pruned_heads_owner else getattr(self.module, self.roles.pruned_heads_owner)
            if hasattr(owner, "pruned_heads"):  # transformers 4.x keeps this set for its own prune_heads
                owner.pruned_heads = set(range(self.module._np_dense_heads)) - set(kept_original)
        if self.family.post_prune is not None:
            self.family.post_prune(self, kept_original)


def attention_sites(model: nn.Module, kinds: Sequence[str] = ATTN_KINDS) -> List[HfAttentionSite]:
    """Every attention module of ``model`` (in model order) whose kind is in ``kinds``."""
    fam = family_of(model)
    sites = []
    for name, m in model.named_modules():
        for r in fam.attention:
            if re.search(r.pattern, name):
                lin = [_get(m, getattr(r, role)) for role in ("q", "k", "v", "out")]
                if not all(isinstance(x, nn.Linear) for x in lin):
                    continue
                kind = r.kind(name)
                if kind in kinds:
                    sites.append(HfAttentionSite(name, kind, m, *lin, roles=r, family=fam))
                break
    return sites


def mlp_sites(model: nn.Module, kinds: Sequence[str] = MLP_KINDS) -> List[MlpSite]:
    """Every MLP block of ``model`` whose kind is in ``kinds``."""
    fam = family_of(model)
    sites = []
    for name, m in model.named_modules():
        for r in fam.mlp:
            if not re.search(r.pattern, name):
                continue
            fc2 = _get(m, r.fc2)
            if not isinstance(fc2, nn.Linear):
                continue
            fc1 = None
            for option in r.fc1:
                mods = [_get(m, p) for p in option]
                if all(isinstance(x, nn.Linear) for x in mods):
                    fc1 = mods
                    break
            if fc1 is None:
                raise ValueError(
                    f"{name}: MLP block has {r.fc2!r} but none of the fc1 layouts {list(r.fc1)}; "
                    "NeuroPrune does not know this MLP variant"
                )
            kind = r.kind(name)
            if kind in kinds:
                sites.append(MlpSite(name, kind, m, fc1, fc2))
            break
    return sites
