"""``neuroprune_translation``: fairseq's translation task plus NeuroPrune's epoch-end
redundancy pruning (Algorithm 1's inner loop) with physical removal of heads.

Pruning runs once per epoch, in the epoch's last training step, before its forward pass (the
last batches of an epoch are the ones after which the epoch iterator is exhausted). That is the
one hook fairseq calls before the end-of-epoch validation and checkpoint in every configuration:
with or without validation, with ``--update-freq``, and when fp16 loss scaling skips the epoch's
last update. So the end-of-epoch checkpoint is always of the pruned model, a run resumed from it
continues exactly as the uninterrupted one, and the last epoch is pruned too. The epoch's last
update is then taken by the pruned model. With several workers the data-parallel wrapper
(``--ddp-backend c10d`` / ``pytorch_ddp`` / ``legacy_ddp``) is rebuilt on the pruned parameters
before that forward pass, in place inside fairseq's wrapper (:mod:`.ddp`).
"""
import logging
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask
from omegaconf import II
from torch import nn

from .criterion import check_nonnegative_finite
from .dictionaries import TASK_STATE_KEY, fingerprint
from ..core.head_target import epoch_target
from ..core.policy import format_results
from .contracts import NeuroPruneTask
from .ddp import SUPPORTED_DDP, sync_data_parallel_
from .fairseq_optim import optimizer_surgery
from .sites import FairseqModel, attention_sites, kept_heads_record
from .sparsify import SparsifyConfig, SparsifyTaskMixin
from .sparsify_state import epoch_ending
from .target_heads import check_target_setup, target_enabled, warn_if_max_update_ends_first, warn_if_target_not_reached

logger = logging.getLogger(__name__)


@dataclass
class NeuroPruneTranslationConfig(SparsifyConfig, TranslationConfig):
    np_theta: float = field(default=0.2, metadata={"help": "l_inf distance at or below which two heads' [Q,K,V] blocks are similar (paper: 0.1..0.4 for MT, 0.15 for GLUE)"})
    np_prune_start_epoch: int = field(default=1, metadata={"help": "first epoch after which redundant heads are pruned"})
    np_prune_every: int = field(default=1, metadata={"help": "prune after every N-th epoch (from --np-prune-start-epoch)"})
    np_dominating: ChoiceEnum(["heuristic", "exact"]) = field(default="heuristic", metadata={"help": "dominating set: the paper's Algorithm 3 ('heuristic') or a minimum one ('exact', modules of up to 24 heads)"})
    np_no_head_pruning: bool = field(default=False, metadata={"help": "only add the penalties; never prune heads"})
    np_target_heads: int = field(default=0, metadata={"help": "K: total heads over the model when pruning ends (0: off, --np-theta decides). Each pruning epoch chooses theta by bisection on the current head distances so the dominating sets keep the scheduled count (linear from the current count to K at --np-target-epoch), merges the closest heads first where they overshoot; --np-theta is not used"})
    np_target_heads_per_module: int = field(default=0, metadata={"help": "the same with k heads in every attention module (one theta per module); not with --np-target-heads"})
    np_target_epoch: int = field(default=0, metadata={"help": "the pruning epoch after which the head target is reached (default 0: the last pruning epoch of the run, from --max-epoch)"})
    # read from the global config (same names, as fairseq requires for interpolated
    # fields), to refuse unsupported set-ups before training starts
    # (fp16/bf16 are also in every checkpoint written before them: keep them so those load)
    fp16: bool = II("common.fp16")
    bf16: bool = II("common.bf16")
    memory_efficient_fp16: bool = II("common.memory_efficient_fp16")
    memory_efficient_bf16: bool = II("common.memory_efficient_bf16")
    ddp_backend: str = II("distributed_training.ddp_backend")
    distributed_world_size: int = II("distributed_training.distributed_world_size")
    store_ema: bool = II("ema.store_ema")
    max_epoch: int = II("optimization.max_epoch")


def check_setup(cfg: NeuroPruneTranslationConfig) -> None:
    """Errors that name the problem and the fix, raised before any data is read."""
    check_nonnegative_finite(np_theta=cfg.np_theta)
    if cfg.np_prune_start_epoch < 1 or cfg.np_prune_every < 1:
        raise ValueError("--np-prune-start-epoch and --np-prune-every must be >= 1")
    check_target_setup(cfg)
    if cfg.bf16 and not _has_torch_xla():
        raise ValueError(
            "fairseq 0.12 runs --bf16 / --memory-efficient-bf16 on TPUs only (they imply --tpu and fail on a GPU "
            "with 'NoneType' object has no attribute 'xla_device'); on GPUs use --fp16, --memory-efficient-fp16 or --amp"
        )
    if cfg.np_no_head_pruning:
        return
    if cfg.store_ema:
        raise ValueError("--store-ema keeps a dense copy of the model that head pruning cannot follow; "
                         "drop --store-ema (or add --np-no-head-pruning)")
    if (cfg.distributed_world_size or 1) > 1 and cfg.ddp_backend not in SUPPORTED_DDP:
        raise ValueError(
            f"--ddp-backend {cfg.ddp_backend} cannot follow parameters that change shape; physical head "
            "pruning with several workers needs --ddp-backend c10d / pytorch_ddp (fairseq's default; the "
            "wrapper is rebuilt after each pruning) or legacy_ddp / no_c10d"
        )


def _has_torch_xla() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch_xla") is not None


def check_same_on_all_workers(heads, device=None):
    """Every data-parallel worker must have pruned the same heads (same synced weights,
    deterministic plan); a divergence would corrupt training, so fail loudly."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    mine = torch.tensor(heads, dtype=torch.long, device=device)  # nccl needs a GPU tensor
    lo, hi = mine.clone(), mine.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise RuntimeError(f"workers pruned different heads: min {lo.tolist()} max {hi.tolist()}")
    logger.info(f"NeuroPrune: the {dist.get_world_size()} workers pruned identically ({'.'.join(map(str, heads))})")


@register_task("neuroprune_translation", dataclass=NeuroPruneTranslationConfig)
class NeuroPruneTranslationTask(SparsifyTaskMixin, TranslationTask, NeuroPruneTask):
    cfg: NeuroPruneTranslationConfig

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        check_setup(cfg)
        return super().setup_task(cfg, **kwargs)

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self.train_itr = None  # NeuroPruneTask.train_itr
        self._last_pruned_epoch = 0
        self._budget_checked = False
        self._kept_heads = None  # kept_heads_record after the last pruning; saved in the checkpoint
        self._target_watch = {"start": False, "end": False}  # the head target's warnings, once each

    def state_dict(self):
        """fairseq saves this as the checkpoint's ``task_state``: after a pruning it holds
        ``neuroprune_kept_heads`` (module name -> original indices of the heads kept), which the
        topology report reads to show which head positions survive, and always the fingerprint
        of the dictionaries (:mod:`.dictionaries`)."""
        state = dict(super().state_dict())
        # which dictionaries the model was trained with: neuroprune-evaluate refuses other ones
        state[TASK_STATE_KEY] = fingerprint([self.src_dict, self.tgt_dict])
        if self._kept_heads is not None:
            state["neuroprune_kept_heads"] = self._kept_heads
        return state

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if not attention_sites(model):
            raise ValueError(
                f"model {type(model).__name__} has no fairseq MultiheadAttention module; NeuroPrune needs an "
                "attention model such as --arch neuroprune_iwslt_de_en"
            )
        from .model import NeuroPruneTransformerModel

        if not self.cfg.np_no_head_pruning and not isinstance(model, NeuroPruneTransformerModel):
            arch = getattr(cfg, "arch", None) or getattr(cfg, "_name", "?")
            raise ValueError(
                f"--arch {arch} cannot reload checkpoints with pruned heads; use --arch neuroprune_{arch} "
                "(same model, registered by this plugin) or add --np-no-head-pruning"
            )
        if target_enabled(self.cfg):
            self._check_budget(model)
        return model

    def _check_budget(self, model) -> None:
        """Refuse a head budget the model cannot meet (at least one head per module, at most the
        heads it has): at model build time (dense shapes) and when the first epoch starts (after a
        checkpoint, possibly pruned, was loaded)."""
        FairseqModel(model).check_head_budget(self.cfg.np_target_heads, self.cfg.np_target_heads_per_module)

    def get_batch_iterator(self, dataset, *args, **kwargs):
        itr = super().get_batch_iterator(dataset, *args, **kwargs)
        if dataset is self.datasets.get(self.cfg.train_subset):
            self.train_itr = itr
        return itr

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        epoch = self._last_step_of_epoch()
        if epoch is not None and self._due(epoch):
            self.prune(epoch, model, optimizer)
        # after a pruning, or a resume from a pruned checkpoint: rebuild the DDP wrapper in place (.ddp)
        sync_data_parallel_(model)
        if target_enabled(self.cfg):
            self._watch_target(model, update_num, epoch)
        return super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)

    def _watch_target(self, model, update_num: int, epoch_ending) -> None:
        """Say when the head target will not be / was not reached: at the run's first step when
        --max-update stops it before the target epoch ends, and at its last step (--max-update,
        or the end of --max-epoch) when the model still has more heads than the target."""
        watch, c = self._target_watch, self.cfg
        if not watch["start"]:
            watch["start"] = True
            warn_if_max_update_ends_first(c, self.train_itr, update_num, check_target_setup(c, warn=False))
        why = None
        if (c.max_update or 0) > 0 and update_num + 1 >= c.max_update:
            why = f"--max-update {c.max_update}"
        elif epoch_ending is not None and (c.max_epoch or 0) > 0 and epoch_ending >= c.max_epoch:
            why = f"--max-epoch {c.max_epoch}"
        if why and not watch["end"]:
            watch["end"] = True
            while isinstance(getattr(model, "module", None), nn.Module):  # a data-parallel wrapper
                model = model.module
            warn_if_target_not_reached(c, model, why)

    def _due(self, epoch: int) -> bool:
        c = self.cfg
        return (not c.np_no_head_pruning and epoch >= c.np_prune_start_epoch
                and (epoch - c.np_prune_start_epoch) % c.np_prune_every == 0 and self._last_pruned_epoch < epoch)

    def _last_step_of_epoch(self):
        """The training epoch, if this step trains on its last batches (its iterator is
        exhausted: fairseq's grouped iterator takes a step's batches before the step)."""
        return epoch_ending(self.train_itr)

    def begin_epoch(self, epoch, model):
        super().begin_epoch(epoch, model)
        if not self._budget_checked and target_enabled(self.cfg):
            self._check_budget(model)  # the loaded checkpoint may hold fewer heads
        self._budget_checked = True

    def prune(self, epoch, model, optimizer=None):
        """Prune every attention module of ``model`` (a data-parallel wrapper is fine), slicing
        the optimizer state (and fairseq's fp32 master copy under ``--fp16``/``--bf16``) with it.
        ``train_step`` then rebuilds the data-parallel wrapper on the new shapes (:mod:`.ddp`)."""
        while isinstance(getattr(model, "module", None), nn.Module):  # a data-parallel wrapper
            model = model.module
        c, fm = self.cfg, FairseqModel(model)
        before = sum(fm.head_counts())
        with optimizer_surgery(optimizer) as opt:
            if target_enabled(c):
                target = epoch_target(fm.head_counts(), c.np_target_heads, c.np_target_heads_per_module, epoch,
                                      c.np_prune_start_epoch, c.np_prune_every, check_target_setup(c, warn=False))
                results, tp = fm.prune_to_target_(target, c.np_dominating, bool(c.np_target_heads_per_module), opt)
                how = tp.describe()
            else:
                results = fm.prune_redundant_heads_(c.np_theta, c.np_dominating, opt)
                how = f"theta={c.np_theta:g}"
        self._last_pruned_epoch = epoch
        self._kept_heads = kept_heads_record(model)
        check_same_on_all_workers(fm.head_counts(), next(model.parameters()).device)
        after = sum(fm.head_counts())
        report = fm.sparsity()
        logger.info(
            f"NeuroPrune epoch {epoch:03d}: heads {before} -> {after} ({how}, "
            f"{c.np_dominating}); heads per module {'.'.join(map(str, fm.head_counts()))}; "
            f"sparsity {report.sparsity:.2f}%\n{format_results(results)}"
        )
        return results
