"""The paper's math, torch only: no fairseq or transformers import here.

One named function per equation or algorithm of NeuroPrune (Dhurandhar et al., 2024):

* :func:`mlp_preferential_attachment_penalty` -- Eq. 1
* :func:`attention_group_penalty`             -- Eq. 2
* :func:`head_distance_matrix`, :func:`similarity_matrix` -- Algorithm 2, first step
* :func:`find_dominating`                     -- Algorithm 3, literally
* :func:`find_dominating_exact`               -- a minimum dominating set (option)
* :func:`elim_redundant_`                     -- Algorithm 2 (plan, then merge + physical removal)
* :mod:`.proximal` -- proximal maps of Eq. 1 (:func:`preferential_attachment_prox`), Eq. 2
  (:func:`attention_group_prox`, :func:`sqrt_l1_group_prox`) and l1 (:func:`soft_threshold`)
* :mod:`.target`   -- target-sparsity schedule and enforcement (:func:`sparsify_step_`)

The fairseq plugin and the HuggingFace adapters only map their modules to the roles
q, k, v, out, fc1, fc2 (:mod:`.sites`) and say how their optimizer is reached, by implementing
the one model facade :class:`.facade.PrunableModel` (head counts, pruning, matrices, sparsity:
one name, one signature, one return type for both). The policy written once for both, on site
lists (which penalty over which sites, pruning every module, counts, sparsity), is
:mod:`.policy`; deciding what to prune (:mod:`.redundancy`, :mod:`.head_target`) is apart from
the surgery that executes a plan (:mod:`.surgery`); the sparsity step around every optimizer
step is :mod:`.sparsify_loop`. :mod:`.dsp` holds the DSP baseline's math.
"""
from .penalties import (
    attention_group_penalty,
    l1_penalty,
    mlp_preferential_attachment_penalty,
    preferential_attachment_l1,
)
from .redundancy import (
    RedundancyPlan,
    find_dominating,
    find_dominating_exact,
    head_distance_matrix,
    plan_redundant_heads,
    resolve_representatives,
    similarity_matrix,
)
from .facade import PrunableModel
from .policy import elim_redundant_
from .surgery import (
    head_index,
    merge_heads_into_representatives_,
    pad_heads_,
    pad_linear_,
    prune_heads_,
    prune_linear_,
    remove_dead_neurons_,
    resize_linear_,
    zero_heads_,
)
from .sparsity import SparsityReport, count_weights, sparsity_report

__all__ = [
    "PrunableModel",
    "attention_group_penalty",
    "l1_penalty",
    "mlp_preferential_attachment_penalty",
    "preferential_attachment_l1",
    "RedundancyPlan",
    "find_dominating",
    "find_dominating_exact",
    "head_distance_matrix",
    "plan_redundant_heads",
    "resolve_representatives",
    "similarity_matrix",
    "elim_redundant_",
    "head_index",
    "merge_heads_into_representatives_",
    "pad_heads_",
    "pad_linear_",
    "prune_heads_",
    "prune_linear_",
    "remove_dead_neurons_",
    "resize_linear_",
    "zero_heads_",
    "SparsityReport",
    "count_weights",
    "sparsity_report",
]
