"""Data-parallel training with parameters that change shape or identity: head pruning under
``--ddp-backend c10d`` / ``pytorch_ddp`` (fairseq's default, PyTorch DDP) and ``legacy_ddp``.

**Why a rebuild.** A data-parallel wrapper is built for the parameters it sees at construction.
PyTorch's ``DistributedDataParallel`` builds its reducer once: gradient buckets (flat buffers with
one view per parameter) and an autograd hook on each parameter's gradient accumulator, which it
keeps alive. Head pruning replaces ``p.data`` by a smaller tensor (the parameter keeps its
identity, so the optimizer follows, :mod:`neuroprune_fairseq.core.surgery`); the reducer cannot
follow, and while it lives autograd keeps using the accumulators it holds, which still expect the
old shapes ("returned an invalid gradient ... expected shape compatible with [old]"), even for a
new DDP. fairseq's ``LegacyDistributedDataParallel`` reads shapes at every all-reduce but keeps
the parameter *objects*: when a run resumes from a pruned checkpoint, the model loads it by
building smaller parameters (:func:`.sites.resize_to_state_dict_`) after fairseq has already
wrapped the dense ones, and the new parameters' gradients would never be all-reduced (the workers
would drift apart silently). A PyTorch DDP built before that load is stale the same way.

**Mechanism.** fairseq builds its data-parallel wrapper lazily (``Trainer.model``) as
``ModuleProxyWrapper(DistributedDataParallel(model))`` or
``ModuleProxyWrapper(LegacyDistributedDataParallel(model))`` (inside a
``DistributedTimeoutWrapper`` with ``--heartbeat-timeout``), keeps that object in
``trainer._wrapped_model`` and passes that same object as ``model`` to ``task.train_step`` (and
``optimizer_step``, ``valid_step``). At every ``train_step``, after the epoch-end pruning and
before the forward pass (:mod:`.task`), :func:`sync_data_parallel_` checks whether the wrapper
inside that chain was built on the module's current parameters (the same objects and, for PyTorch
DDP, the same shapes: a few hundred comparisons). If not, it swaps in a new one, *in place*:

1. a PyTorch DDP's reducer is released (its autograd hooks removed, the reducer and its logger
   dropped), so the parameters get fresh gradient accumulators of the new shapes;
2. a new wrapper of the same class is built on the same (pruned) module with the old one's
   settings (PyTorch DDP: process group, device, bucket size, ``find_unused_parameters``,
   ``gradient_as_bucket_view``, buffer broadcasting, static graph and communication hooks such as
   ``--ddp-comm-hook fp16``; legacy: process group, fairseq's buffer size);
3. it is assigned to the parent wrapper's ``module`` attribute.

The outer wrapper object does not change, so the trainer's ``_wrapped_model``, the ``model`` that
this very ``train_step`` hands to the forward pass, and every later call see the new wrapper; the
task needs no handle on the trainer and no trainer internals are touched. Building a PyTorch DDP is
a collective: all workers prune in the same step (the plan is deterministic on the synced
weights) or resume from the same checkpoint, and rebuild there; DDP checks that the parameter
shapes agree across workers and broadcasts rank 0's parameters.

With ``--update-freq N > 1`` the pruning step's first micro-batch runs inside the old wrapper's
``no_sync()`` (entered by the trainer before it calls the task): the new wrapper all-reduces that
micro-batch's gradients as well. The update is the same (the last micro-batch's all-reduce averages
the sum, and averaging is linear), at the cost of one extra all-reduce per pruning.
Other backends (``fully_sharded``, ``slowmo``) are refused before training.

**CPU workers.** Stock fairseq 0.12 cannot run ``--ddp-backend c10d`` on CPU (gloo) at all, pruning
or not: it passes ``device_ids=[device_id]``, which torch >= 1.9 refuses for a CPU module
("device_ids and output_device arguments only work with single-device/multiple-device GPU modules
or CPU modules"). :func:`allow_cpu_c10d` (applied when fairseq loads the plugin) makes fairseq
build :class:`FairseqDDP`, which drops them for CPU modules (GPU runs are unchanged) and records
the parameters it was built on.
"""
import logging
import time
import warnings
from typing import List, Optional, Tuple

from fairseq.distributed import LegacyDistributedDataParallel
from torch import nn
from torch.nn.parallel import DistributedDataParallel

logger = logging.getLogger(__name__)

#: backends whose wrapper is rebuilt when the parameters change (:func:`sync_data_parallel_`)
LEGACY_DDP = ("legacy_ddp", "no_c10d")
PYTORCH_DDP = ("c10d", "pytorch_ddp")
SUPPORTED_DDP = LEGACY_DDP + PYTORCH_DDP
#: fairseq's buffer for LegacyDistributedDataParallel (models/distributed_fairseq_model.py)
LEGACY_BUFFER_SIZE = 2 ** 28


def _signature(module: nn.Module) -> List[Tuple[nn.Parameter, Tuple[int, ...]]]:
    return [(p, tuple(p.shape)) for p in module.parameters()]


class FairseqDDP(DistributedDataParallel):
    """The ``DistributedDataParallel`` fairseq builds under this plugin: ``device_ids`` /
    ``output_device`` dropped for a module on the CPU (torch refuses them there), and the
    parameters (objects and shapes) it was built on recorded, for :func:`sync_data_parallel_`."""

    def __init__(self, module, device_ids=None, output_device=None, *args, **kwargs):
        if all(p.device.type == "cpu" for p in module.parameters()):
            device_ids = output_device = None
        built_on = _signature(module)
        super().__init__(module, device_ids, output_device, *args, **kwargs)
        self.neuroprune_built_on = built_on


def allow_cpu_c10d() -> None:
    """Make fairseq 0.12 build :class:`FairseqDDP` (CPU workers can use c10d / pytorch_ddp)."""
    from fairseq.models import distributed_fairseq_model as dfm

    if dfm.DistributedDataParallel is DistributedDataParallel:
        dfm.DistributedDataParallel = FairseqDDP


def _find_data_parallel(wrapper: nn.Module):
    """``(parent, dp)``: the first PyTorch or legacy DDP down the ``.module`` chain and the module
    holding it as ``.module`` (``(None, None)`` when there is none)."""
    parent, m = None, wrapper
    while isinstance(m, nn.Module):
        if isinstance(m, (DistributedDataParallel, LegacyDistributedDataParallel)):
            return parent, m
        parent, m = m, getattr(m, "module", None)
    return None, None


def _same(built_on, now) -> bool:
    return len(built_on) == len(now) and all(p is q and s == t for (p, s), (q, t) in zip(built_on, now))


def is_stale(dp: nn.Module) -> bool:
    """Whether a data-parallel wrapper was built on other parameters than its module's current ones."""
    now = _signature(dp.module)
    if isinstance(dp, LegacyDistributedDataParallel):  # reads shapes at every all-reduce
        held = [p for params in dp.per_device_params for p in params]
        return len(held) != len(now) or {id(p) for p in held} != {id(q) for q, _ in now}
    built_on = getattr(dp, "neuroprune_built_on", None)
    if built_on is None:  # not built by fairseq under this plugin: torch's own record, if any
        built_on = [(p, tuple(p.shape)) for p in getattr(dp, "_module_parameters", [])] or None
    if built_on is None:
        return True  # cannot tell: rebuilding is always correct
    return not _same(built_on, now)


def _release_reducer(ddp: DistributedDataParallel) -> None:
    """Drop the old reducer: its hooks, and the gradient accumulators (old shapes) it keeps alive.
    The old DDP object may outlive this call (an open ``no_sync()`` holds it) but no longer acts."""
    if getattr(ddp, "reducer", None) is None:
        return
    if hasattr(ddp, "_remove_autograd_hooks"):
        ddp._remove_autograd_hooks()
    del ddp.reducer
    ddp.logger = None  # holds a reference to the reducer


def _new_ddp(old: DistributedDataParallel) -> DistributedDataParallel:
    kwargs = dict(
        device_ids=old.device_ids, output_device=old.output_device, dim=old.dim,
        process_group=old.process_group, bucket_cap_mb=old.bucket_bytes_cap / (1024 * 1024),
        find_unused_parameters=old.find_unused_parameters, gradient_as_bucket_view=old.gradient_as_bucket_view,
    )
    # buffer broadcasting: newer torch calls broadcast_buffers forward_sync_buffers
    kwargs["broadcast_buffers"] = getattr(old, "forward_sync_buffers", getattr(old, "broadcast_buffers", True))
    if getattr(old, "mixed_precision", None) is not None:
        kwargs["mixed_precision"] = old.mixed_precision
    _release_reducer(old)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the broadcast_buffers rename
        new = FairseqDDP(old.module, **kwargs)
    for hook, state in getattr(old, "_comm_hooks", []):
        new.register_comm_hook(state, hook)
    if getattr(old, "static_graph", False):
        new._set_static_graph()
    return new


def sync_data_parallel_(wrapper: nn.Module) -> Optional[nn.Module]:
    """Rebuild, in place, the data-parallel wrapper in ``wrapper``'s chain (the ``model`` fairseq
    passes to the task) if it was built on other parameters than the module's current ones (after a
    pruning, or a resume from a pruned checkpoint). Returns the new wrapper, or ``None`` when there
    was nothing to do (one worker, or the wrapper is current). Every worker must call it at the same
    point (building a PyTorch DDP is a collective); they all reach the same answer."""
    parent, old = _find_data_parallel(wrapper)
    if old is None or not is_stale(old):
        return None
    if parent is None:
        raise RuntimeError(f"a bare {type(old).__name__} cannot be rebuilt in place; wrap it in fairseq's "
                           "ModuleProxyWrapper (as fairseq's DistributedFairseqModel does)")
    t0 = time.time()
    if isinstance(old, LegacyDistributedDataParallel):
        new = LegacyDistributedDataParallel(old.module, process_group=old.process_group, buffer_size=LEGACY_BUFFER_SIZE)
    else:
        new = _new_ddp(old)
    parent.module = new
    logger.info(f"NeuroPrune: rebuilt {type(old).__name__} on the current parameters "
                f"({sum(p.numel() for p in new.module.parameters())} parameters, {time.time() - t0:.2f}s)")
    return new
