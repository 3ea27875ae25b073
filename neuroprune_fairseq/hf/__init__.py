"""NeuroPrune for HuggingFace transformers models (BERT/RoBERTa, T5, OPT).

Nothing here is imported by ``neuroprune_fairseq`` itself, and transformers is imported
lazily: the names below load their submodule on first access.

* roles:    :func:`family_of`, :func:`attention_sites`, :func:`mlp_sites`, ``FAMILIES``
* pruning:  :class:`HfModel` (the core's model facade on a HF model), :func:`neuroprune_penalties`,
            :func:`prune_redundant_heads_`, :func:`prune_heads`, :func:`model_sparsity`,
            :func:`heads_summary`, :func:`head_distances`
* trainer:  :class:`NeuroPruneArguments`, :class:`NeuroPruneTrainer`,
            :class:`NeuroPruneTrainerMixin`, :class:`NeuroPruneCallback`
* io:       :func:`save_pruned`, :func:`load_pruned`, :func:`pruning_record`
* modeling_neuroprune (+ its sibling neuroprune_layers): the remote code ``save_pruned`` copies
  next to the weights, so that ``AutoModel*.from_pretrained(dir, trust_remote_code=True)`` loads
  the folder (torch and transformers only; not exported here)
"""
import importlib

_EXPORTS = {
    "roles": ["FAMILIES", "Family", "AttentionRoles", "MlpRoles", "AttentionSite", "HfAttentionSite", "MlpSite",
              "family_of", "attention_sites", "mlp_sites"],
    "pruning": ["HfModel", "neuroprune_penalties", "prune_redundant_heads_", "prune_heads", "prune_attention_heads_",
                "model_sparsity", "matrices", "dense_matrix_count", "heads_summary",
                "head_counts", "head_distances", "HeadPruneResult"],
    "trainer": ["NeuroPruneArguments", "NeuroPruneTrainer", "NeuroPruneTrainerMixin", "NeuroPruneCallback"],
    "io": ["save_pruned", "load_pruned", "pruning_record"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
