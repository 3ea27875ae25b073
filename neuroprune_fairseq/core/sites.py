"""Sites: an attention module with its q, k, v, out Linear layers, and an MLP block with its
fc1 (one, or two for a gated MLP) and fc2 Linear layers. Torch only.

The adapters (fairseq, HuggingFace) only say where the sites of a model are and how a module
stores its head width and head count: they subclass :class:`AttentionSite` (``head_dim`` and
``_set_head_count_``) and, where the dense MLP width is not the current one, :class:`MlpSite`
(``dense_dim``). Everything else, penalties, pruning, counting, is written once, on sites
(:mod:`neuroprune_fairseq.core.policy`), and on models through the facade
(:mod:`neuroprune_fairseq.core.facade`).

Kinds: ``encoder`` (encoder self-attention / FFN), ``decoder`` (decoder self-attention /
FFN), ``cross`` (encoder-decoder attention), on both sides.
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

from torch import nn

ATTN_KINDS = ("encoder", "decoder", "cross")
MLP_KINDS = ("encoder", "decoder")


def parse_kinds(value, allowed: Sequence[str], option: str) -> Tuple[str, ...]:
    """Parse ``"encoder,cross"`` / a sequence / ``"none"`` into a validated tuple of kinds."""
    if isinstance(value, str):
        kinds = tuple(k.strip() for k in value.split(",") if k.strip()) if value not in ("", "none") else ()
    else:
        kinds = tuple(value)
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise ValueError(f"{option} got {bad}; choose a comma-separated subset of {list(allowed)} (or 'none')")
    return kinds


@dataclass
class AttentionSite:
    """One attention module of a model and its q, k, v, out Linear layers.

    The module remembers its dense head count (``module._np_dense_heads``) and the original
    indices of the heads still present (``module._np_kept_heads``) once :meth:`mark_dense_`
    has run (before the first surgery).
    """

    name: str
    kind: str
    module: nn.Module
    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    out: nn.Linear

    @property
    def head_dim(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must say where the head width is")

    def _set_head_count_(self, kept_original: List[int]) -> None:
        """Make the module consistent with q/k/v holding ``len(kept_original)`` heads."""
        raise NotImplementedError(f"{type(self).__name__} must say how its module stores the head count")

    @property
    def num_heads(self) -> int:
        return self.q.weight.shape[0] // self.head_dim

    @property
    def dense_heads(self) -> int:
        return int(getattr(self.module, "_np_dense_heads", self.num_heads))

    @property
    def kept_heads(self) -> List[int]:
        """Original (dense) indices of the heads still present."""
        return list(getattr(self.module, "_np_kept_heads", range(self.num_heads)))

    def mark_dense_(self) -> None:
        """Remember the module's dense head count and head indices (before any surgery)."""
        m = self.module
        if not hasattr(m, "_np_dense_heads"):
            m._np_dense_heads = self.num_heads
            m._np_kept_heads = list(range(self.num_heads))

    def set_kept_heads_(self, kept_original: Sequence[int]) -> None:
        """After the surgery: q/k/v now hold the heads ``kept_original`` (original indices,
        sorted); record them and update the module's head count."""
        if not hasattr(self.module, "_np_dense_heads"):
            raise RuntimeError(f"{self.name}: call mark_dense_() before the surgery")
        self.module._np_kept_heads = list(kept_original)
        self._set_head_count_(list(kept_original))


@dataclass
class MlpSite:
    """One MLP block: ``fc2(act(fc1(x)))``, with ``fc1`` one Linear or two (gate, linear)."""

    name: str
    kind: str
    module: nn.Module
    fc1: List[nn.Linear]
    fc2: nn.Linear

    @property
    def dense_dim(self) -> int:
        """Neurons of the dense block: ``module._np_dense_dim`` where a surgery or a loader
        recorded it, else the present width (adapters that know better override this)."""
        return int(getattr(self.module, "_np_dense_dim", self.fc1[0].out_features))
