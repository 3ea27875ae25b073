"""The one owner of fairseq checkpoint files: read, load into a model, rename to the plugin's
arch, count heads, save. The commands (finalize, dsp_finalize, head_importance, topology) and
the recipes (sweeps, main job, benchmarks, evaluate) call this module; none of them calls
``torch.load`` or fairseq's ``checkpoint_utils`` on a checkpoint file itself.

* :func:`read_state`      -- the stored dict as saved (counters, weights): no model is built
* :func:`read_checkpoint` -- fairseq's reader (config upgraded, ``--data`` override), or an
  error saying what the file is instead
* :func:`load`            -- a :class:`Checkpoint`: the state, the model (resized to the stored
  shapes) and its task; ``.dense()`` builds the same model at its dense size
* :func:`neuroprune_arch`, :func:`set_arch_` -- a stock transformer checkpoint as the plugin's
  ``neuroprune_<arch>`` twin (the one that reloads pruned shapes)
* :func:`save`            -- fairseq's persistent save
* :func:`epochs_trained`, :func:`updates_per_epoch`, :func:`active_heads` -- what a checkpoint
  holds, read without building a model

fairseq is imported inside the functions: importing this module stays cheap for the recipes.
"""
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from ..core.topology import active_head_count


def read_state(path) -> Dict:
    """The checkpoint's dict as stored (``torch.load`` with fairseq's config types allowed)."""
    import torch

    from . import checkpoint_compat  # noqa: F401  (torch >= 2.6 safe loading of fairseq checkpoints)

    return torch.load(path, map_location="cpu", weights_only=False)


def read_checkpoint(path, data: Optional[str] = None, overrides: Optional[Dict] = None) -> Dict:
    """A fairseq checkpoint as a dict (``--data`` and ``overrides`` applied to its config), or an
    error that says what ``path`` is instead."""
    from fairseq import checkpoint_utils

    from .. import plugin  # noqa: F401  (registers the model; safe checkpoint loading)

    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--path {path}: no such checkpoint file")
    overrides = {**(overrides or {}), **({"data": data} if data else {})}
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path, overrides or None)
    except Exception as e:  # torch/pickle raise anything from KeyError to UnpicklingError here
        raise ValueError(f"--path {path} is not a readable fairseq checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not {"model", "cfg"} <= set(state) or state["cfg"] is None:
        raise ValueError(f"--path {path} is not a fairseq training checkpoint (no 'model' and 'cfg' entries)")
    return state


@dataclass
class Checkpoint:
    """A loaded checkpoint: its dict, the model in eval mode on CPU, the task that built it."""

    state: Dict
    model: object
    task: object
    from_checkpoint: bool = False  # built as fairseq's own loader does (see :func:`load`)

    def dense(self):
        """The same model at its dense size (fresh weights), for the before/after figures."""
        if self.from_checkpoint:
            return self.task.build_model(self.state["cfg"].model, from_checkpoint=True)
        return self.task.build_model(self.state["cfg"].model)


def load(path, data: Optional[str] = None, from_checkpoint: bool = False) -> Checkpoint:
    """Build the checkpoint's model at the stored (possibly pruned) shapes and load its weights.

    ``from_checkpoint``: rebuild it as fairseq's ``load_model_ensemble_and_task`` does (task state
    restored, update count set), with ``--dsp-pretrained`` cleared, so that a DSP run's
    checkpoint (``--task dsp_translation``) fetches no pretrained weights and freezes nothing;
    its gate logits stay in ``state['criterion']``. The DSP and Michel commands load this way."""
    from fairseq import checkpoint_utils, tasks

    path = str(path)
    overrides = {"dsp_pretrained": None} if from_checkpoint else None
    state = read_checkpoint(path, data, overrides)
    cfg = state["cfg"]
    if not os.path.isdir(str(cfg.task.data).split(os.pathsep)[0]):
        raise FileNotFoundError(
            f"the checkpoint's data directory {cfg.task.data!r} does not exist from here "
            "(its dictionaries are needed); pass --data DATA_BIN_DIR"
        )
    if from_checkpoint:
        models, _, task = checkpoint_utils.load_model_ensemble_and_task(
            [path], arg_overrides={**overrides, **({"data": data} if data else {})}, state=state)
        return Checkpoint(state, models[0].eval(), task, from_checkpoint=True)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    return Checkpoint(state, model.eval(), task)


def neuroprune_arch(cfg_model) -> Optional[str]:
    """The ``neuroprune_*`` arch to save a stock-transformer checkpoint as, '' if it is one already,
    None if the model has no such twin (its MLPs then cannot be resized on loading)."""
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.models.transformer import TransformerModel

    from .model import NeuroPruneTransformerModel

    arch = getattr(cfg_model, "arch", None) or getattr(cfg_model, "_name", None)
    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    if model_cls is not None and issubclass(model_cls, NeuroPruneTransformerModel):
        return ""
    if model_cls is TransformerModel and f"neuroprune_{arch}" in ARCH_MODEL_REGISTRY:
        return f"neuroprune_{arch}"
    return None


def set_arch_(cfg_model, arch: str) -> None:
    """Write ``arch`` as the model config's arch (and ``_name``): an ``argparse.Namespace``
    (fairseq's legacy models) or a DictConfig."""
    from omegaconf import OmegaConf, open_dict

    if OmegaConf.is_config(cfg_model):
        with open_dict(cfg_model):
            cfg_model.arch = cfg_model._name = arch
    else:
        for key in ("arch", "_name"):
            setattr(cfg_model, key, arch)


def as_neuroprune_(state: Dict) -> Optional[str]:
    """Rename a stock transformer checkpoint's arch (config and legacy args) to its
    ``neuroprune_<arch>`` twin, which loads resized MLPs and pruned heads. Returns what
    :func:`neuroprune_arch` says: the new arch, '' (already the plugin's) or None (no twin)."""
    arch = neuroprune_arch(state["cfg"].model)
    if arch:
        set_arch_(state["cfg"].model, arch)
        if state.get("args") is not None:
            state["args"].arch = arch
    return arch


def save(state: Dict, output: str) -> None:
    """Write a checkpoint dict with fairseq's persistent save (the folder is made if needed)."""
    from fairseq.checkpoint_utils import torch_persistent_save

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    torch_persistent_save(state, output)


def epochs_trained(path) -> int:
    """Complete epochs a fairseq checkpoint has trained (its iterator names the epoch to run next)."""
    return read_state(path)["extra_state"]["train_iterator"]["epoch"] - 1


def updates_per_epoch(path) -> float:
    """The updates a checkpoint's run made per complete epoch."""
    s = read_state(path)
    return s["optimizer_history"][-1]["num_updates"] / (s["extra_state"]["train_iterator"]["epoch"] - 1)


def _cfg_int(cfg, name: str) -> Optional[int]:
    """A model config's integer field: an ``argparse.Namespace``, a DictConfig or a dict."""
    value = cfg.get(name) if isinstance(cfg, dict) else getattr(cfg, name, None)
    return int(value) if value is not None else None


def active_heads(path) -> Tuple[List[int], List[int]]:
    """(active heads per module, physical heads per module) of a fairseq checkpoint, in the
    model's order: a head is active when any of its q/k/v rows or out-projection columns is
    non-zero (:func:`neuroprune_fairseq.core.topology.active_head_count`; DSP/Michel's zeroed
    placeholder of an emptied module counts 0). Each side's head size comes from its own
    embedding size and head count in the config."""
    s = read_state(path)
    m, cfg = s["model"], s["cfg"]["model"]
    enc = _cfg_int(cfg, "encoder_embed_dim") // _cfg_int(cfg, "encoder_attention_heads")
    dec_dim, dec_heads = _cfg_int(cfg, "decoder_embed_dim"), _cfg_int(cfg, "decoder_attention_heads")
    head_dim = {"encoder": enc, "decoder": dec_dim // dec_heads if dec_dim and dec_heads else enc}
    active, physical = [], []
    for key in [k for k in m if k.endswith("q_proj.weight")]:
        base = key[: -len("q_proj.weight")]
        hd = head_dim["decoder" if key.startswith("decoder.") else "encoder"]
        q, k, v, out = (m[base + f"{r}_proj.weight"] for r in ("q", "k", "v", "out"))
        active.append(active_head_count(q, k, v, out, hd))
        physical.append(q.shape[0] // hd)
    return active, physical
