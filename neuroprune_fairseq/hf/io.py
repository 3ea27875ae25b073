"""Save and reload a head-pruned HuggingFace model.

``save_pruned(model, dir)`` calls ``model.save_pretrained`` and then rearranges the folder into
HuggingFace's remote-code layout:

* ``config.json``: ``model_type`` ``neuroprune_pruned``, an ``auto_map`` naming the classes of
  ``modeling_neuroprune.py`` for ``AutoConfig`` and every auto class the real model type has
  (``AutoModel``, ``AutoModelForSequenceClassification``, ...), ``base_config`` (the model's
  real config, what ``save_pretrained`` wrote) and ``neuroprune`` (the pruning record below);
* ``modeling_neuroprune.py`` and the sibling it imports (``neuroprune_layers.py``): copies of
  :mod:`neuroprune_fairseq.hf.modeling_neuroprune` and every file it imports relatively
  (:func:`remote_code_files`), which import only torch and transformers (and safetensors) and
  each other; transformers copies the siblings into its module cache. So, in a Python that never imports
  this project, ``AutoModel*.from_pretrained(dir, trust_remote_code=True)`` rebuilds the stock
  model, applies the record and loads the weights (outputs equal the pruned model's);
* ``neuroprune_model.safetensors`` (or ``neuroprune_model.safetensors.index.json`` plus
  shards when sharded): the weights, renamed so that a class-specific
  ``BertModel.from_pretrained(dir)`` finds no ``model.safetensors`` and fails rather than
  silently building a dense model around pruned weights;
* ``neuroprune_pruned.json`` (the record: model class, family, per attention module the
  original indices of its kept heads, its dense head count and the attribute names holding its
  head count, the shape of every Linear layer) and ``neuroprune_config.json`` (the real
  config): the same two dicts as in ``config.json``, for ``neuroprune-topology`` and readers of
  the layout before remote code (:func:`load_pruned` reads ``config.json``, else these).

Without ``trust_remote_code=True``, ``AutoModel*`` / ``AutoConfig.from_pretrained(dir)`` raise
transformers' ``ValueError`` asking for ``trust_remote_code=True`` (the folder's model_type is
no stock one, so nothing falls back to a dense model).

``load_pruned(dir)`` rebuilds the dense model from the real config, applies the recorded
head removal (our surgery), Linear shapes and embedding / LayerNorm shapes (the record's
``embedding_norm_shapes``: narrower than ``hidden_size`` after CoFi removed hidden dimensions;
``config.hidden_size`` stays the dense width), and loads the weights strictly; its modules are
this package's (``StructuredLinear``, the T5 attention subclasses), for further pruning.
The remote code (``modeling_neuroprune.py``) does not resize embeddings / LayerNorms yet: a
hidden-pruned folder fails there with torch's size-mismatch error; load it with
:func:`load_pruned`.
"""
import json
import os
import shutil
from typing import Optional

from torch import nn

from ..core import resize_linear_
from ..core.structured_linear import as_structured_like_
from ..core.surgery import prune_heads_
from .roles import attention_sites, family_of

RECORD = "neuroprune_pruned.json"
CONFIG = "neuroprune_config.json"
WEIGHTS = "neuroprune_model.safetensors"
MODEL_TYPE = "neuroprune_pruned"
MODELING = "modeling_neuroprune.py"
FORMAT_VERSION = 1
HOW_TO_LOAD = ("A NeuroPrune-pruned model (uneven heads and widths per layer): load it with "
               "AutoModel*.from_pretrained(dir, trust_remote_code=True) (modeling_neuroprune.py, torch and "
               "transformers only) or neuroprune_fairseq.hf.load_pruned(dir).")


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
        r = s.roles
        attention[s.name] = {
            "kind": s.kind,
            "dense_heads": s.dense_heads,
            "kept_heads": s.kept_heads,
            "head_dim": s.head_dim,
            # what the remote code (modeling_neuroprune.py) sets, without our role tables
            "roles": {"q": r.q, "k": r.k, "v": r.v, "out": r.out, "holder": r.holder,
                      "heads_attrs": list(r.heads_attrs), "inner_attrs": list(r.inner_attrs),
                      "pruned_heads_owner": r.pruned_heads_owner,
                      "post_prune": "t5" if s.family.post_prune is not None else None},
        }
    linear_shapes = {
        name: list(m.weight.shape) for name, m in model.named_modules() if isinstance(m, nn.Linear)
    }
    hidden_shapes = {  # narrower than the config's after CoFi's hidden-dimension removal
        name: list(m.weight.shape) for name, m in model.named_modules() if isinstance(m, (nn.Embedding, nn.LayerNorm))
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
        "embedding_norm_shapes": hidden_shapes,
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
    with open(os.path.join(save_directory, CONFIG)) as f:
        base_config = json.load(f)
    with open(os.path.join(save_directory, RECORD), "w") as f:
        json.dump(record, f, indent=1)
    for source in remote_code_files():
        shutil.copyfile(source, os.path.join(save_directory, os.path.basename(source)))
    with open(os.path.join(save_directory, "config.json"), "w") as f:
        json.dump({
            "model_type": MODEL_TYPE,
            "neuroprune_how_to_load": HOW_TO_LOAD,
            "auto_map": remote_auto_map(model.config),
            "base_config": base_config,
            "neuroprune": record,
            "transformers_version": record["transformers_version"],
        }, f, indent=1)
    return save_directory


def remote_code_files() -> list:
    """Paths of the remote code: ``modeling_neuroprune.py`` (``auto_map``'s module), then every
    sibling it imports relatively, recursively, as transformers' loader finds them
    (``dynamic_module_utils.get_relative_import_files``, what its ``custom_object_save`` copies)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    entry = os.path.join(os.path.dirname(os.path.abspath(__file__)), MODELING)
    return [entry] + sorted(get_relative_import_files(entry))


def remote_auto_map(config) -> dict:
    """``config.json``'s ``auto_map``: ``AutoConfig`` and every auto class of
    :data:`modeling_neuroprune.AUTO_CLASSES` whose mapping holds ``type(config)``."""
    import transformers

    from .modeling_neuroprune import AUTO_CLASSES

    module = MODELING[:-3]
    auto_map = {"AutoConfig": f"{module}.NeuroPrunedConfig"}
    for name in AUTO_CLASSES:
        auto = getattr(transformers, name, None)
        if auto is not None and type(config) in auto._model_mapping:
            auto_map[name] = f"{module}.NeuroPruned{name}"
    return auto_map


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


def _read_folder(directory: str):
    """``(record, real config dict, where)``: from ``config.json`` (remote-code layout), else
    from ``neuroprune_pruned.json`` / ``neuroprune_config.json`` (folders saved before it)."""
    path = os.path.join(directory, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            config = json.load(f)
        if config.get("model_type") == MODEL_TYPE and "neuroprune" in config and "base_config" in config:
            return config["neuroprune"], dict(config["base_config"]), path
    record_path = os.path.join(directory, RECORD)
    if not os.path.exists(record_path):
        raise FileNotFoundError(f"{directory} has no {RECORD}: not saved by neuroprune_fairseq.hf.save_pruned")
    with open(record_path) as f:
        record = json.load(f)
    with open(os.path.join(directory, CONFIG)) as f:
        return record, json.load(f), record_path


def resize_embedding_or_norm_(module: nn.Module, shape) -> None:
    """Give an ``nn.Embedding`` (shape ``[num, dim]``) or ``nn.LayerNorm`` (``[dim]``) fresh
    uninitialised parameters of ``shape``, to load a state dict whose hidden dimensions were
    removed (CoFi, :func:`neuroprune_fairseq.hf.cofi_prune.apply_cofi_masks_`)."""
    import torch

    w = module.weight
    module.weight = nn.Parameter(w.new_empty(shape), requires_grad=w.requires_grad)
    if isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = int(shape[0]), int(shape[1])
        return
    module.normalized_shape = tuple(int(n) for n in shape)
    if getattr(module, "bias", None) is not None:
        module.bias = nn.Parameter(torch.empty_like(module.weight), requires_grad=module.bias.requires_grad)


def load_pruned(directory: str, model_class=None, device: Optional[str] = None) -> nn.Module:
    """Rebuild a model saved by :func:`save_pruned` (same class unless ``model_class`` is
    given), in eval mode. Outputs equal the saved model's exactly."""
    import transformers
    from transformers import AutoConfig

    record, config_dict, where = _read_folder(directory)
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{where}: unknown format_version {record.get('format_version')}")
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
    for name, m in model.named_modules():
        shape = record.get("embedding_norm_shapes", {}).get(name)
        if isinstance(m, (nn.Embedding, nn.LayerNorm)) and shape is not None and list(m.weight.shape) != shape:
            resize_embedding_or_norm_(m, shape)
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
