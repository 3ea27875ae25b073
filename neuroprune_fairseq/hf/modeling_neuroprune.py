"""Remote code for a NeuroPrune-pruned HuggingFace model (written next to its weights by
``neuroprune_fairseq.hf.save_pruned``). Self-contained: it imports torch and transformers (and
safetensors, which transformers requires) and its sibling ``neuroprune_layers.py`` (saved with
it), never ``neuroprune_fairseq``.

    from transformers import AutoModel, AutoModelForSequenceClassification
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

A pruned model has uneven head counts and FFN widths per layer, and Linear layers that read only
their live inputs / write only their live outputs, so no stock class can hold its weights. The
folder's ``config.json`` (model_type ``neuroprune_pruned``) carries the real config
(``base_config``) and the pruning record (``neuroprune``); the classes here build the *stock*
model for the auto class asked for (``transformers.<AutoClass>.from_config(real config)``),
apply the recorded head removal, Linear shapes, input gathers / output scatters and MLP widths,
then load ``neuroprune_model.safetensors``. What comes back is the stock class (e.g.
``BertForSequenceClassification``) with pruned modules, in eval mode; its outputs equal the
pruned model's. Loading a base model (``AutoModel``) from a saved task model takes the base
model's weights, as ``from_pretrained`` does.
"""
# Duplicated on purpose: the remote code must run without neuroprune_fairseq installed, so it
# cannot import its twins. Its layers (sibling neuroprune_layers.py) copy core/structured_linear.py,
# core/surgery.py and hf/roles.py (hf/t5.py imports its T5 subclasses from there); build_pruned
# does what hf/io.py's load_pruned does.
# tests/test_hf_remote_code.py compares them.
import json
import logging
import os
from typing import Dict, Optional

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

# A relative import of a sibling file: transformers copies it next to this one into its module
# cache (dynamic_module_utils.get_relative_import_files); save_pruned writes it into the folder.
# BUFFERS ... StructuredLinear: re-exported, names of this module before the split.
from .neuroprune_layers import (  # noqa: F401
    BUFFERS, IN_FULL, IN_INDEX, OUT_BIAS, OUT_INDEX, StructuredLinear, _as_structured_like_, _prune_heads_,
    _resize_linear_)

logger = logging.getLogger(__name__)

MODEL_TYPE = "neuroprune_pruned"
WEIGHTS = "neuroprune_model.safetensors"
FORMAT_VERSION = 1


class NeuroPrunedConfig(PretrainedConfig):
    """``base_config``: the real model's config as a dict (its own ``model_type``);
    ``neuroprune``: the pruning record (kept heads per attention module, Linear shapes, ...)."""

    model_type = MODEL_TYPE

    def __init__(self, base_config: Optional[dict] = None, neuroprune: Optional[dict] = None, **kwargs):
        self.base_config = base_config
        self.neuroprune = neuroprune
        super().__init__(**kwargs)

    def real_config(self) -> PretrainedConfig:
        """The stock config of the model that was pruned."""
        from transformers import AutoConfig

        if not self.base_config:
            raise ValueError("this NeuroPrunedConfig holds no base_config")
        d = dict(self.base_config)
        model_type = d.pop("model_type")
        return AutoConfig.for_model(model_type, **d)


# --------------------------------------------------------------------------- loading
def _load_weights(path: str, weights: str, hub_kwargs: dict) -> Dict[str, Tensor]:
    from safetensors.torch import load_file

    def resolve(name):
        if os.path.isdir(path):
            return os.path.join(path, name)
        from transformers.utils import cached_file

        return cached_file(path, name, **hub_kwargs)

    first = resolve(weights)
    if weights.endswith(".index.json"):
        with open(first) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(load_file(resolve(shard)))
        return state
    return load_file(first)


def _name_map(model: nn.Module, saved_keys) -> callable:
    """Saved name -> name in ``model`` (None: not part of it): a base model built from a saved
    task model drops the ``base_model_prefix``; a task model built from a saved base model adds it."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    saved_has = bool(prefix) and any(k.startswith(prefix + ".") for k in saved_keys)
    target_has = bool(prefix) and isinstance(getattr(model, prefix, None), nn.Module)
    if saved_has and not target_has:
        return lambda n: n[len(prefix) + 1:] if n.startswith(prefix + ".") else None
    if target_has and not saved_has:
        return lambda n: f"{prefix}.{n}" if n else prefix
    return lambda n: n


def build_pruned(config: NeuroPrunedConfig, auto_class: str, state: Dict[str, Tensor]) -> nn.Module:
    """The stock model ``transformers.<auto_class>`` builds for the real config, with the recorded
    pruning applied and ``state`` (the saved weights) loaded; eval mode."""
    import transformers

    record = config.neuroprune or {}
    if record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unknown neuroprune format_version {record.get('format_version')}")
    model = getattr(transformers, auto_class).from_config(config.real_config())
    rename = _name_map(model, state.keys())
    modules = dict(model.named_modules())
    for saved_name, info in record["attention"].items():
        name = rename(saved_name)
        if name is None:
            continue
        module = modules.get(name)
        if module is None:
            raise ValueError(f"attention module {name} is not in a fresh {type(model).__name__}")
        _prune_heads_(module, info)
    shapes = {rename(n): s for n, s in record["linear_shapes"].items()}
    new_state = {}
    for k, v in state.items():
        n = rename(k)
        if n is not None:
            new_state[n] = v
    resized = set()
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        shape = shapes.get(name)
        if shape is not None and list(m.weight.shape) != list(shape):
            _resize_linear_(m, int(shape[0]), int(shape[1]))
            resized.add(name)
        _as_structured_like_(m, new_state, f"{name}." if name else "")
    for saved_name, dense in record.get("mlp_dense_dims", {}).items():
        name = rename(saved_name)
        if name in modules:
            modules[name]._np_dense_dim = int(dense)
    missing, unexpected = model.load_state_dict(new_state, strict=False)
    if unexpected:
        ours = [k for k in unexpected if k.rsplit(".", 1)[0] in modules]
        if ours:
            raise ValueError(f"weights the rebuilt {type(model).__name__} cannot hold: {ours[:5]}")
        logger.warning("Some weights of the checkpoint were not used by %s: %s", type(model).__name__, unexpected)
    if missing:
        model.tie_weights()
        sd = model.state_dict()
        loaded = {t.data_ptr() for k, t in sd.items() if k in new_state}
        really = [k for k in missing if sd[k].data_ptr() not in loaded]
        bad = [k for k in really if k.rsplit(".", 1)[0] in resized]
        if bad:
            raise ValueError(f"pruned weights missing from the checkpoint: {bad[:5]}")
        if really:
            logger.warning("Some weights of %s were not in the checkpoint and are newly initialized: %s",
                           type(model).__name__, really)
    model.eval()
    return model


class NeuroPrunedPreTrainedModel(PreTrainedModel):
    """A factory: ``from_pretrained`` returns the stock ``transformers`` class of
    :attr:`auto_class` for the real config, pruned as recorded, with the saved weights."""

    config_class = NeuroPrunedConfig
    base_model_prefix = "neuroprune"
    auto_class = "AutoModel"

    def __init__(self, config, *args, **kwargs):
        raise TypeError(
            f"{type(self).__name__} only loads saved pruned models: use "
            f"{self.auto_class}.from_pretrained(folder, trust_remote_code=True)")

    @classmethod
    def _from_config(cls, config, **kwargs):
        raise NotImplementedError(
            "a NeuroPrune-pruned model cannot be built without its weights: use "
            f"{cls.auto_class}.from_pretrained(folder, trust_remote_code=True)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None, **kwargs):
        path = str(pretrained_model_name_or_path)
        hub_keys = ("cache_dir", "force_download", "local_files_only", "proxies", "token", "revision", "subfolder")
        hub_kwargs = {k: kwargs[k] for k in hub_keys if kwargs.get(k) is not None}
        if not isinstance(config, NeuroPrunedConfig):
            config = NeuroPrunedConfig.from_pretrained(path, **hub_kwargs)
        record = config.neuroprune or {}
        state = _load_weights(path, record.get("weights", WEIGHTS), hub_kwargs)
        model = build_pruned(config, cls.auto_class, state)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if dtype in (None, "auto"):
            floats = [t.dtype for t in state.values() if t.is_floating_point()]
            dtype = floats[0] if floats else None
        elif isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        if dtype is not None:
            model.to(dtype)
        device = kwargs.get("device_map")
        if isinstance(device, dict) and set(device) == {""}:
            device = device[""]
        if device is not None:
            if not isinstance(device, (str, int, torch.device)) or device == "auto":
                raise NotImplementedError(f"device_map={device!r}: pass one device (e.g. 'cuda:0')")
            model.to(device)
        if getattr(model, "can_generate", lambda: False)():
            try:
                from transformers import GenerationConfig

                model.generation_config = GenerationConfig.from_pretrained(path, **hub_kwargs)
            except (OSError, ValueError):
                pass
        return model


def _factory(auto_class: str) -> type:
    return type(f"NeuroPruned{auto_class}", (NeuroPrunedPreTrainedModel,),
                {"auto_class": auto_class, "__module__": __name__,
                 "__doc__": f"``{auto_class}.from_pretrained(folder, trust_remote_code=True)``"})


# One factory per auto class; config.json's auto_map names those the real model type supports.
AUTO_CLASSES = (
    "AutoModel", "AutoModelForPreTraining", "AutoModelForMaskedLM", "AutoModelForCausalLM",
    "AutoModelForSeq2SeqLM", "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
    "AutoModelForQuestionAnswering", "AutoModelForMultipleChoice", "AutoModelForNextSentencePrediction",
)
NeuroPrunedAutoModel = _factory("AutoModel")
NeuroPrunedAutoModelForPreTraining = _factory("AutoModelForPreTraining")
NeuroPrunedAutoModelForMaskedLM = _factory("AutoModelForMaskedLM")
NeuroPrunedAutoModelForCausalLM = _factory("AutoModelForCausalLM")
NeuroPrunedAutoModelForSeq2SeqLM = _factory("AutoModelForSeq2SeqLM")
NeuroPrunedAutoModelForSequenceClassification = _factory("AutoModelForSequenceClassification")
NeuroPrunedAutoModelForTokenClassification = _factory("AutoModelForTokenClassification")
NeuroPrunedAutoModelForQuestionAnswering = _factory("AutoModelForQuestionAnswering")
NeuroPrunedAutoModelForMultipleChoice = _factory("AutoModelForMultipleChoice")
NeuroPrunedAutoModelForNextSentencePrediction = _factory("AutoModelForNextSentencePrediction")
