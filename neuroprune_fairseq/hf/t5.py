"""T5 specifics of head pruning, behind the T5 family's post-prune hook (``Family.post_prune``).

T5 computes the relative position bias once (first block of a stack), for the dense head
count, and passes it on to every later block; a head-pruned T5 attention module must select
its kept heads' columns of that bias and pass the dense bias on. transformers 4.x and 5.x do
this differently, so :func:`after_head_change` gives a pruned module a subclass of its own
class (built lazily, once per base class, by the remote code's ``neuroprune_layers``, so a
saved model and a live one run the same code; nothing here imports transformers):

* 5.x (no ``pruned_heads``): ``neuroprune_layers._t5_bias_class``;
* 4.x (``pruned_heads`` set kept up to date): ``neuroprune_layers._t5_4x_class``.
"""
from typing import List

# the hook and its subclasses live in the remote code (it cannot import the package; the package can import it)
from .neuroprune_layers import _t5_after_head_change


def after_head_change(site, kept_original: List[int]) -> None:
    """The T5 family's post-prune hook: ``site`` (an ``hf.roles.HfAttentionSite``) now holds the
    heads ``kept_original`` of its ``module._np_dense_heads``."""
    _t5_after_head_change(site.module, kept_original)
