"""Save and reload a head-pruned HuggingFace model.

``save_pruned(model, dir)`` calls ``model.save_pretrained`` and then rearranges the folder:

* ``neuroprune_config.json``: the model's real config (what ``save_pretrained`` wrote as
  ``config.json``);
* ``neuroprune_model.safetensors`` (or ``neuroprune_model.safetensors.index.json`` plus
  shards when sharded): the weights, renamed;
* ``neuroprune_pruned.json``: the record -- model class, family, per attention module the
  original indices of its kept heads and its dense head count, and the shape of every
  Linear layer whose shape differs from the dense model;
* ``config.json``: a stub whose ``model_type`` reads "neuroprune_pruned ... load_pruned":
  ``AutoModel*.from_pretrained(dir)`` / ``AutoConfig.from_pretrained(dir)`` raise
  transformers' "does not recognize this architecture" error, which quotes that
  model_type, i.e. names ``neuroprune_fairseq.hf.load_pruned``. A class-specific
  ``BertModel.from_pretrained(dir)`` fails too (it finds no ``model.safetensors``), rather
  than silently building a dense model around pruned weights.

``load_pruned(dir)`` rebuilds the dense model from the real config, applies the recorded
head removal (our surgery) and Linear shapes, and loads the weights strictly.
"""
import json
import os
from typing import Optional

from torch import nn

from ..core import resize_linear_
from ..core.structured_linear import as_structured_like_
from ..core.surgery import prune_heads_
from .roles import attention_sites, family_of

RECORD = "neuroprune_pruned.json"
CONFIG = "neuroprune_config.json"
WEIGHTS = "neuroprune_model.safetensors"
STUB_MODEL_TYPE = "neuroprune_pruned (a head-pruned model: load it with neuroprune_fairseq.hf.load_pruned(dir))"
FORMAT_VERSION = 1


def remove_structure_(model: nn.Module) -> dict:
    """In place: remove the MLP neurons whose fc2 column is zero, then every all-zero input column
    of q, k, v, fc1 and output row of the out projection and fc2 (gathers / scatters,
    :func:`neuroprune_fairseq.core.policy.remove_structure_`); the outputs stay the same."""
    from ..core.policy import remove_structure_ as core_remove, remove_unread_neurons_
    from .roles import mlp_sites

    neurons = remove_unread_neurons_(mlp_sites(model))
    return {"neurons": neurons, **core_remove(attention_sites(model), mlp_sites(model))}


def pruning_record(model: nn.Module) -> dict:
    """What :func:`load_pruned` needs besides the config and the weights."""
    attention = {}
    for s in attention_sites(model):
        attention[s.name] = {
            "kind": s.kind,
            "dense_heads": s.dense_heads,
            "kept_heads": s.kept_heads,
            "head_dim": s.head_dim,
        }
    linear_shapes = {
        name: list(m.weight.shape) for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    import transformers
    from .roles import mlp_sites

    return {
        "mlp_dense_dims": {s.name: s.dense_dim for s in mlp_sites(model)},
        "format_version": FORMAT_VERSION,
        "model_class": type(model).__name__ if not type(model).__name__.startswith("NeuroPrune") else type(model).__mro__[1].__name__,
        "model_type": model.config.model_type,
        "family": family_of(model).name,
        "transformers_version": transformers.__version__,
        "attention": attention,
        "linear_shapes": linear_shapes,
    }


def save_pruned(model: nn.Module, save_directory: str, structured: bool = True, **save_pretrained_kwargs) -> str:
    """``model.save_pretrained(save_directory)`` plus the pruning record; see the module doc.
    ``structured`` (default): what the penalties zeroed beyond heads is removed in the saved
    copy (:func:`remove_structure_`; ``model`` itself is not changed)."""
    if structured:
        import copy

        model = copy.deepcopy(model)
        remove_structure_(model)
    record = pruning_record(model)
    os.makedirs(save_directory, exist_ok=True)
    save_pretrained_kwargs.setdefault("safe_serialization", True)
    try:
        model.save_pretrained(save_directory, **save_pretrained_kwargs)
    except TypeError:  # transformers versions without safe_serialization
        save_pretrained_kwargs.pop("safe_serialization", None)
        model.save_pretrained(save_directory, **save_pretrained_kwargs)
    os.replace(os.path.join(save_directory, "config.json"), os.path.join(save_directory, CONFIG))
    single = os.path.join(save_directory, "model.safetensors")
    index = os.path.join(save_directory, "model.safetensors.index.json")
    if os.path.exists(single):
        os.replace(single, os.path.join(save_directory, WEIGHTS))
        record["weights"] = WEIGHTS
    elif os.path.exists(index):
        os.replace(index, os.path.join(save_directory, WEIGHTS + ".index.json"))
        record["weights"] = WEIGHTS + ".index.json"
    else:
        raise RuntimeError(f"save_pretrained wrote no safetensors weights in {save_directory}")
    with open(os.path.join(save_directory, RECORD), "w") as f:
        json.dump(record, f, indent=1)
    with open(os.path.join(save_directory, "config.json"), "w") as f:
        json.dump({
            "model_type": STUB_MODEL_TYPE,
            "neuroprune": "This folder holds a head-pruned model. Load it with "
                          "neuroprune_fairseq.hf.load_pruned(dir); AutoModel.from_pretrained cannot.",
        }, f, indent=1)
    return save_directory


def _load_state_dict(directory: str, weights: str) -> dict:
    from safetensors.torch import load_file

    path = os.path.join(directory, weights)
    if weights.endswith(".index.json"):
        with open(path) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(os.path.join(directory, shard)))
        return state
    return load_file(path)


def load_pruned(directory: str, model_class=None, device: Optional[str] = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` (same class unless ``model_class`` is
    given), in eval mode. Outputs equal the saved model's exactly."""
    import transformers
    from transformers import AutoConfig

    record_path = os.path.join(directory, RECORD)
    if not os.path.exists(record_path):
        raise FileNotFoundError(f"{directory} has no {RECORD}: not saved by neuroprune_fairseq.hf.save_pruned")
    with open(record_path) as f:
        record = json.load(f)
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{record_path}: unknown format_version {record.get('format_version')}")
    with open(os.path.join(directory, CONFIG)) as f:
        config_dict = json.load(f)
    model_type = config_dict.pop("model_type", record["model_type"])
    config = AutoConfig.for_model(model_type, **config_dict)
    if model_class is None:
        model_class = getattr(transformers, record["model_class"])
    model = model_class(config)
    sites = {s.name: s for s in attention_sites(model)}
    for name, info in record["attention"].items():
        site = sites.get(name)
        if site is None:
            raise ValueError(f"{directory}: attention module {name} is not in a fresh {model_class.__name__}")
        if site.num_heads != info["dense_heads"]:
            raise ValueError(f"{name}: a fresh model has {site.num_heads} heads, the record says {info['dense_heads']}")
        kept = list(info["kept_heads"])
        if kept != list(range(site.num_heads)):
            site.mark_dense_()
            prune_heads_(site.q, site.k, site.v, site.out, site.head_dim, kept)
            site.set_kept_heads_(kept)
    state = _load_state_dict(directory, record.get("weights", WEIGHTS))
    for name, m in model.named_modules():
        shape = record["linear_shapes"].get(name)
        if isinstance(m, nn.Linear) and shape is not None and list(m.weight.shape) != shape:
            resize_linear_(m, shape[0], shape[1])
        if isinstance(m, nn.Linear):
            as_structured_like_(m, state, f"{name}.")
    from .roles import mlp_sites

    for s in mlp_sites(model):
        dense = record.get("mlp_dense_dims", {}).get(s.name)
        if dense is not None and dense != s.fc1[0].out_features:
            s.module._np_dense_dim = int(dense)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{directory}: unexpected weights {unexpected[:5]}")
    if missing:
        model.tie_weights()
        loaded = {p.data_ptr() for k, p in model.state_dict().items() if k in state}
        really = [k for k in missing if model.state_dict()[k].data_ptr() not in loaded]
        if really:
            raise ValueError(f"{directory}: weights missing from the checkpoint: {really[:5]}")
    if device is not None:
        model.to(device)
    model.eval()
    return model
