"""Head/neuron surgery under fairseq's optimizer wrappers.

The core surgery (``core/surgery.py``) slices a parameter together with ``optimizer.state[param]``.
That is enough when the torch optimizer holds the model's own parameters: fp32 training, fairseq's
``--memory-efficient-fp16`` / ``--memory-efficient-bf16`` (the optimizer steps the fp16/bf16
parameters and keeps fp32 state of the same shapes) and ``--amp``.

``--fp16`` / ``--bf16`` (fairseq's ``FP16Optimizer``) keep an fp32 *master copy* of the weights,
either one flat vector (``--fp16``) or one fp32 tensor per parameter (``--bf16``,
``--fp16-no-flatten-grads``), and the torch optimizer holds that copy and its state.
:func:`optimizer_surgery` hands the core a stand-in whose ``state`` maps every model parameter to
its own slice of the master copy (key ``"_master"``) and of the optimizer state, lets the surgery
slice them like the weights, and then rebuilds the master copy and the state from the surviving
slices. Master values the surgery did not touch keep their fp32 precision; where the surgery
changed the model's weight (a merged out-projection column, a folded bias) the master takes the
model's value, so master and model agree afterwards.

:class:`MasterCopy` is the same layout for the sparsity step after every update
(``--np-proximal`` / ``--np-target-sparsity``, :mod:`.sparsify`): fp32 views (not copies) of the
master copy and of its optimizer state per model parameter, stepped in place and then copied into
the model.
"""
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Dict, List, Optional

import torch

MASTER = "_master"


def torch_optimizer(fairseq_optimizer):
    """The torch optimizer inside a fairseq optimizer wrapper (or a torch optimizer itself)."""
    if fairseq_optimizer is None or isinstance(fairseq_optimizer, torch.optim.Optimizer):
        return fairseq_optimizer
    return getattr(fairseq_optimizer, "optimizer", None)


def has_master_copy(fairseq_optimizer) -> bool:
    """fairseq's ``FP16Optimizer`` (``--fp16``/``--bf16``): fp32 master weights outside the model."""
    return all(hasattr(fairseq_optimizer, a) for a in ("fp16_params", "fp32_params", "fp32_optimizer"))


def _views(opt, fp16_params, fp32_params) -> Dict[torch.Tensor, Dict]:
    """Per model parameter: its master slice and state slices, as tensors of its shape."""
    state = {}
    if isinstance(fp32_params, dict):  # flat: one fp32 vector per device
        for device, flat in fp32_params.items():
            st = opt.state.get(flat, {})
            offset = 0
            for p in (p for p in fp16_params if p.device.index == device):
                n = p.numel()
                entry = {MASTER: flat.data[offset:offset + n].view(p.shape).clone()}
                for k, v in st.items():
                    if torch.is_tensor(v) and v.dim() == 1 and v.numel() == flat.numel():
                        entry[k] = v[offset:offset + n].view(p.shape).clone()
                state[p] = entry
                offset += n
    else:  # one fp32 tensor per parameter
        for p, p32 in zip(fp16_params, fp32_params):
            entry = {MASTER: p32.data}
            entry.update({k: v for k, v in opt.state.get(p32, {}).items() if torch.is_tensor(v) and v.shape == p32.shape})
            state[p] = entry
    return state


def _master_value(p: torch.Tensor, master: torch.Tensor) -> torch.Tensor:
    """The sliced master where it still rounds to the model's weight, the model's weight elsewhere."""
    model32 = p.data.float()
    return torch.where(master.to(p.dtype) == p.data, master, model32)


def _rebuild(opt, fp16_params, fp32_params, views) -> None:
    if isinstance(fp32_params, dict):
        for device, flat in list(fp32_params.items()):
            params = [p for p in fp16_params if p.device.index == device]
            data = torch.cat([_master_value(p, views[p][MASTER]).reshape(-1) for p in params])
            new = torch.nn.Parameter(data)
            new.grad = torch.zeros_like(data)
            old_state = opt.state.pop(flat, {})
            new_state = {}
            for k, v in old_state.items():
                if torch.is_tensor(v) and v.dim() == 1 and v.numel() == flat.numel():
                    v = torch.cat([views[p][k].reshape(-1) for p in params]).to(v.dtype)
                new_state[k] = v
            if old_state:
                opt.state[new] = new_state
            for group in opt.param_groups:
                group["params"] = [new if q is flat else q for q in group["params"]]
            fp32_params[device] = new
    else:
        for p, p32 in zip(fp16_params, fp32_params):
            entry = views[p]
            if entry[MASTER] is p32.data:  # not resized; the surgery may still have changed it in place
                p32.data.copy_(_master_value(p, p32.data))
                continue
            p32.data = _master_value(p, entry[MASTER]).contiguous()
            p32.grad = torch.zeros_like(p32.data)
            st = opt.state.get(p32)
            if st:
                st.update({k: v for k, v in entry.items() if k != MASTER})


@contextmanager
def optimizer_surgery(fairseq_optimizer):
    """``with optimizer_surgery(trainer_optimizer) as opt: prune_...(model, ..., opt)``.

    Yields what the core surgery takes as ``optimizer`` (``None`` when there is no optimizer):
    the torch optimizer itself, or for ``FP16Optimizer`` a stand-in whose slices are written
    back into a rebuilt fp32 master copy and optimizer state on exit.
    """
    if fairseq_optimizer is None or not has_master_copy(fairseq_optimizer):
        yield torch_optimizer(fairseq_optimizer)
        return
    opt = torch_optimizer(fairseq_optimizer.fp32_optimizer)
    fp16_params: List[torch.Tensor] = list(fairseq_optimizer.fp16_params)
    fp32_params = fairseq_optimizer.fp32_params
    views = _views(opt, fp16_params, fp32_params)
    yield SimpleNamespace(state=views)
    _rebuild(opt, fp16_params, fp32_params, views)
    fairseq_optimizer._needs_sync = False


def master_weights(fairseq_optimizer) -> Optional[List[torch.Tensor]]:
    """The fp32 master copy as one tensor per model parameter (``None`` without one)."""
    if not has_master_copy(fairseq_optimizer):
        return None
    fp32 = fairseq_optimizer.fp32_params
    if not isinstance(fp32, dict):
        return [p32.data for p32 in fp32]
    out, offsets = [], {}
    for p in fairseq_optimizer.fp16_params:
        d = p.device.index
        o = offsets.get(d, 0)
        out.append(fp32[d].data[o:o + p.numel()].view(p.shape))
        offsets[d] = o + p.numel()
    return out


class MasterCopy:
    """What ``--np-proximal`` / ``--np-target-sparsity`` act on under ``--fp16`` / ``--bf16``.

    fairseq's ``FP16Optimizer`` steps an fp32 master copy and then copies it into the model's
    fp16/bf16 weights; a sparsity step on the model's weights would be overwritten by the next
    copy (and its zeros revived). This gives, for every model parameter, an fp32 *view* into the
    master copy (a slice of the flat vector, or the per-parameter tensor) and views of the torch
    optimizer's state for that slice, so the sparsity step works in place on the master, reads
    Adam's ``exp_avg_sq`` of the master slice for its per-weight step (:meth:`step_of`), and
    :meth:`sync_to_model_` then writes the master into the model. Built afresh for every step:
    the head surgery replaces the master copy (:func:`optimizer_surgery`).
    """

    def __init__(self, fairseq_optimizer):
        if not has_master_copy(fairseq_optimizer):
            raise ValueError("MasterCopy needs fairseq's FP16Optimizer (--fp16 / --bf16)")
        self.opt = torch_optimizer(fairseq_optimizer.fp32_optimizer)
        groups = {id(q): g for g in self.opt.param_groups for q in g["params"]}
        fp16_params, fp32 = list(fairseq_optimizer.fp16_params), fairseq_optimizer.fp32_params
        self._master: Dict[int, torch.Tensor] = {}  # id(model param) -> fp32 view of the master
        self._state: Dict[int, tuple] = {}  # id(master view) -> (param group, state views)
        if isinstance(fp32, dict):  # flat: one fp32 vector per device, the device's params in order
            for device, flat in fp32.items():
                st = self.opt.state.get(flat, {})
                offset = 0
                for p in (p for p in fp16_params if p.device.index == device):
                    n = p.numel()
                    view = flat.data[offset:offset + n].view(p.shape)
                    state = {k: (v[offset:offset + n].view(p.shape)
                                 if torch.is_tensor(v) and v.dim() == 1 and v.numel() == flat.numel() else v)
                             for k, v in st.items()}
                    self._add(p, view, groups.get(id(flat)), state)
                    offset += n
                if offset != flat.numel():
                    raise ValueError(f"the fp32 master copy holds {flat.numel()} values but the model's parameters "
                                     f"on device {device} have {offset}: they are out of step")
        elif isinstance(fp32, (list, tuple)):  # one fp32 tensor per parameter
            if len(fp32) != len(fp16_params):
                raise ValueError(f"{len(fp32)} fp32 master tensors stand for {len(fp16_params)} model parameters: "
                                 f"they are out of step")
            for p, p32 in zip(fp16_params, fp32):
                if p32.shape != p.shape:
                    raise ValueError(f"an fp32 master tensor of shape {tuple(p32.shape)} stands for a parameter of "
                                     f"shape {tuple(p.shape)}: they are out of step")
                self._add(p, p32.data, groups.get(id(p32)), self.opt.state.get(p32) or {})
        else:
            raise ValueError(f"--np-proximal / --np-target-sparsity under --fp16/--bf16: unsupported layout of "
                             f"fairseq's fp32 master copy ({type(fp32).__name__}); use --memory-efficient-fp16 or --amp")

    def _add(self, p, view, group, state) -> None:
        self._master[id(p)] = view
        if group is not None:
            self._state[id(view)] = (group, state)

    def view_of(self, w: torch.Tensor) -> torch.Tensor:
        """The fp32 master view of the model parameter ``w`` (``w`` itself when the optimizer does not
        hold it, e.g. a frozen weight: then the step acts on the model's weight as without a master)."""
        return self._master.get(id(w), w)

    def roles(self, roles):
        """:class:`..core.target.SparsifyRoles` with every tensor replaced by its master view."""
        import dataclasses

        v = self.view_of
        return dataclasses.replace(roles, attn=[tuple(v(w) for w in qkv) for qkv in roles.attn],
                                   mlp=[([v(f) for f in fc1s], v(fc2)) for fc1s, fc2 in roles.mlp],
                                   counted=[v(w) for w in roles.counted])

    def step_of(self):
        """:func:`..core.controller.optimizer_step_of` for the master views: Adam's step from the
        ``exp_avg_sq`` of each master slice."""
        from ..core.controller import optimizer_step_of

        return optimizer_step_of(self.opt, lookup=lambda w: self._state.get(id(w)))

    def sync_to_model_(self, weights: List[torch.Tensor]) -> None:
        """Copy the master into the model's ``weights`` (fp16/bf16) after the sparsity step, then
        zero the master wherever the model's weight is zero (an fp32 value below fp16's smallest
        subnormal rounds to 0): zeros are the same in both, so the sparsity counted on the model is
        the master's and a zero mask taken on the master holds the model's zeros."""
        with torch.no_grad():
            for p in weights:
                m = self._master.get(id(p))
                if m is None:
                    continue
                p.data.copy_(m)
                m.masked_fill_(p.data == 0, 0.0)


def master_copy(optimizer) -> Optional["MasterCopy"]:
    """fairseq's fp32 master copy under ``--fp16`` / ``--bf16`` (``FP16Optimizer``) as views per
    model parameter, or ``None`` (fp32, ``--memory-efficient-fp16/bf16``, ``--amp``: the optimizer
    steps the model's own weights)."""
    return MasterCopy(optimizer) if optimizer is not None and has_master_copy(optimizer) else None
