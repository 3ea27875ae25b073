"""HF Trainer integration: penalties in ``compute_loss``, redundancy pruning at epoch end.

Use :class:`NeuroPruneTrainer` (a ``transformers.Trainer``), or mix
:class:`NeuroPruneTrainerMixin` into your own Trainer subclass (before it in the bases),
or, for pruning only, add :class:`NeuroPruneCallback` to any Trainer. Not a forked loop.
"""
import logging
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from transformers import Trainer, TrainerCallback

from ..core.controller import TARGET_MODES
from ..core.head_target import check_one_budget, epoch_target
from ..core.sites import parse_kinds
from ..core.target import check_target_options
from .pruning import PENALTIES, HfModel, neuroprune_penalties
from .roles import ATTN_KINDS, MLP_KINDS, attention_sites, mlp_sites

logger = logging.getLogger(__name__)


@dataclass
class NeuroPruneArguments:
    """The method's options, named as the fairseq criterion's ``--np-*`` options.

    ``alpha`` weighs sum R_attn (Eq. 2), ``beta`` sum R_mlp (Eq. 1); ``penalty='l1'`` is the
    paper's baseline (plain L1 on q,k,v with alpha and on fc1,fc2 with beta), ``'none'``
    dense fine-tuning. ``theta`` is the l_inf head-similarity threshold of the per-epoch
    pruning (``prune_heads=False`` turns it off), ``dominating`` 'heuristic' (the paper's
    Algorithm 3) or 'exact' (a minimum dominating set). ``proximal=True`` applies the
    penalty as a proximal step after every optimizer step (exact zeros) instead of adding its
    gradient; ``target_sparsity=S`` (percent) ends the run with at least S% of the attention +
    MLP matrix weights exactly zero or removed, along a cubic ramp from ``target_start`` to
    ``target_end`` (fractions of the run), made by the penalties themselves
    (``target_mode='penalty'``: a controller drives the proximal strengths, ``target_gain`` its
    step) or by a cut of penalty-shaped scores after every step (``'cut'``); ``prox_metric``
    'optimizer' takes the proximal step in Adam's diagonal metric (what alpha and beta do in the
    gradient mode), 'euclidean' at the learning rate; see :mod:`neuroprune_fairseq.hf.sparsify`.

    ``target_heads=K`` (total over the pruned modules) or ``target_heads_per_module=k``: theta
    is chosen at every epoch end (bisection over the head distances) so that the count follows
    a linear schedule to exactly K after ``target_epoch`` (0: the last training epoch), the
    closest heads merged first where the dominating sets overshoot
    (:mod:`neuroprune_fairseq.core.head_target`); ``theta`` is then not used.
    """

    alpha: float = 0.0
    beta: float = 0.0
    eps: float = 1e-4
    theta: float = 0.15
    dominating: str = "heuristic"
    penalty: str = "neuroprune"
    prune_heads: bool = True
    attn_modules: str = "encoder,decoder,cross"
    mlp_modules: str = "encoder,decoder"
    proximal: bool = False
    target_sparsity: Optional[float] = None
    target_start: float = 0.0
    target_end: float = 0.75
    target_mode: str = "penalty"
    target_gain: float = 0.05
    prox_metric: str = "optimizer"
    target_heads: int = 0
    target_heads_per_module: int = 0
    target_epoch: int = 0

    def __post_init__(self):
        for name in ("target_heads", "target_heads_per_module", "target_epoch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"NeuroPrune {name} must be an int >= 0 (0: off / default), got {v!r}")
        check_one_budget(self.target_heads, self.target_heads_per_module, ("target_heads", "target_heads_per_module"))
        if (self.target_heads or self.target_heads_per_module) and not self.prune_heads:
            raise ValueError("target_heads prunes heads: it needs prune_heads=True")
        if self.target_epoch and not (self.target_heads or self.target_heads_per_module):
            raise ValueError("target_epoch needs target_heads or target_heads_per_module")
        for name in ("alpha", "beta", "eps", "theta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"NeuroPrune {name} must be a finite number >= 0, got {v!r}")
        if self.dominating not in ("heuristic", "exact"):
            raise ValueError(f"dominating must be 'heuristic' or 'exact', got {self.dominating!r}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        check_target_options(self.target_sparsity, self.target_start, self.target_end)
        if self.target_mode not in TARGET_MODES:
            raise ValueError(f"target_mode must be one of {TARGET_MODES}, got {self.target_mode!r}")
        if self.prox_metric not in ("optimizer", "euclidean"):
            raise ValueError(f"prox_metric must be 'optimizer' or 'euclidean', got {self.prox_metric!r}")
        if not (isinstance(self.target_gain, (int, float)) and math.isfinite(self.target_gain) and self.target_gain > 0):
            raise ValueError(f"target_gain must be a finite number > 0, got {self.target_gain!r}")
        if (self.target_sparsity is not None and self.target_mode == "penalty" and self.penalty != "none"
                and not (self.alpha > 0 or self.beta > 0)):
            raise ValueError("target_mode='penalty' drives the strengths alpha / beta up or down from the values given: "
                             "give at least one > 0 (or target_mode='cut')")
        if (self.proximal or self.target_sparsity is not None) and self.penalty == "none":
            raise ValueError("proximal / target_sparsity shape the zeros by the penalty: use penalty='neuroprune' or 'l1'")
        self.attn_kinds = parse_kinds(self.attn_modules, ATTN_KINDS, "attn_modules")
        # with a proximal step (asked for, or the penalty-driven target) the penalty adds no gradient
        self.by_proximal_step = bool(self.proximal or (self.target_sparsity is not None and self.target_mode == "penalty"))
        self.mlp_kinds = parse_kinds(self.mlp_modules, MLP_KINDS, "mlp_modules")


class NeuroPruneCallback(TrainerCallback):
    """After every epoch: ELIM_REDUNDANT on every attention module, with the merge rule,
    physical removal and the optimizer's state sliced with the weights. Logs, per module,
    heads before -> after, the smallest head distance next to theta, then the total heads
    kept and the sparsity. ``history`` keeps one dict per epoch."""

    def __init__(self, np_args: NeuroPruneArguments, trainer: Optional[Trainer] = None, verbose: bool = True):
        self.np_args = np_args
        self.trainer = trainer
        self.verbose = verbose
        self.history: List[Dict] = []
        self._target_epoch: Optional[int] = None

    @property
    def has_target(self) -> bool:
        return bool(self.np_args.target_heads or self.np_args.target_heads_per_module)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        # fail now, not after the first epoch
        if self.np_args.prune_heads and self.np_args.dominating == "exact" and model is not None:
            from ..core.redundancy import EXACT_MAX_HEADS

            big = [s.name for s in attention_sites(model, self.np_args.attn_kinds) if s.num_heads > EXACT_MAX_HEADS]
            if big:
                raise ValueError(f"dominating='exact' handles at most {EXACT_MAX_HEADS} heads per module; "
                                 f"{big[0]} has more: use 'heuristic'")
        if self.has_target and model is not None:
            from .target_heads import resolve_target_epoch

            a = self.np_args
            HfModel(model).check_head_budget(a.target_heads, a.target_heads_per_module, a.attn_kinds)
            self._target_epoch = resolve_target_epoch(a.target_epoch, state.num_train_epochs or args.num_train_epochs)
        return control

    def on_epoch_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not self.np_args.prune_heads or model is None:
            return control
        target, a, hm = None, self.np_args, HfModel(model)
        if self.has_target:
            from .target_heads import EVERY, START

            scheduled = epoch_target(hm.head_counts(a.attn_kinds), a.target_heads, a.target_heads_per_module,
                                     int(round(state.epoch)), START, EVERY, self._target_epoch)
            results, target = hm.prune_to_target_(scheduled, a.dominating, bool(a.target_heads_per_module), optimizer,
                                                  a.attn_kinds)
        else:
            results = hm.prune_redundant_heads_(a.theta, a.dominating, optimizer, a.attn_kinds)
        kept, dense = hm.heads_summary()
        sp = hm.sparsity()
        entry = {
            "epoch": state.epoch,
            "heads_kept": kept,
            "heads_dense": dense,
            "sparsity": sp.sparsity,
            "removed_this_epoch": sum(len(r.plan.removed) for r in results),
            "target": None if target is None else {"heads": sum(target.targets), "thetas": target.thetas,
                                                   "kept_by_threshold": target.kept_by_threshold,
                                                   "closest_first_merges": len(target.merges)},
            "modules": {r.name: {"heads": len(r.plan.keep), "min_dist": r.plan.min_distance,
                                 "theta": r.plan.theta, "kept": r.kept_original} for r in results},
        }
        self.history.append(entry)
        lines = [f"NeuroPrune epoch {state.epoch:.2f}: heads kept {kept}/{dense}, sparsity {sp.sparsity:.2f}%, "
                 f"removed this epoch {entry['removed_this_epoch']}"] + ["  " + r.line() for r in results]
        if target is not None:
            lines.insert(1, "  " + target.describe())
        elif not entry["removed_this_epoch"]:
            md = min((r.plan.min_distance for r in results), default=float("inf"))
            lines.append(f"  nothing pruned: smallest head distance {md:.4f} > theta {self.np_args.theta:g}")
        text = "\n".join(lines)
        logger.info(text)
        if self.verbose:
            print(text, flush=True)
        if self.trainer is not None:
            # Trainer.log clears control.should_log: keep the Trainer's own pending epoch-end log
            # (the epoch's loss under logging_strategy="epoch") from being dropped
            should_log = control.should_log
            self.trainer.log({"np_heads_kept": float(kept), "np_sparsity": sp.sparsity,
                              "np_min_head_dist": min((r.plan.min_distance for r in results), default=float("inf"))})
            control.should_log = should_log
        return control


class NeuroPruneTrainerMixin:
    """Adds ``alpha * sum R_attn + beta * sum R_mlp`` to the Trainer's loss and registers a
    :class:`NeuroPruneCallback`. Pass ``neuroprune=NeuroPruneArguments(...)``."""

    def __init__(self, *args, neuroprune: Optional[NeuroPruneArguments] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.np_args = neuroprune or NeuroPruneArguments(penalty="none", prune_heads=False)
        self.np_callback = NeuroPruneCallback(self.np_args, trainer=self)
        self.add_callback(self.np_callback)
        self.np_sparsify = None
        if self.np_args.proximal or self.np_args.target_sparsity is not None:
            from .sparsify import SparsifyCallback

            self.np_sparsify = SparsifyCallback(self.np_args)
            self.add_callback(self.np_sparsify)
        self._np_sites: Optional[Tuple] = None
        self._np_log_sums = [0.0, 0.0, 0]

    def _np_penalty(self) -> Optional[torch.Tensor]:
        a = self.np_args
        if a.penalty == "none" or (a.alpha == 0 and a.beta == 0):
            return None
        if self._np_sites is None:
            self._np_sites = (attention_sites(self.model, a.attn_kinds), mlp_sites(self.model, a.mlp_kinds))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not a.by_proximal_step):
            r_attn, r_mlp = neuroprune_penalties(self.model, a.eps, a.penalty, sites=self._np_sites)
        self._np_log_sums[0] += float(r_attn.detach())
        self._np_log_sums[1] += float(r_mlp.detach())
        self._np_log_sums[2] += 1
        if a.by_proximal_step:  # applied as a proximal step after the optimizer step (hf/sparsify.py); logged only
            return None
        return a.alpha * r_attn + a.beta * r_mlp

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return result
        penalty = self._np_penalty()
        if penalty is None:
            return result
        # The Trainer divides the loss by the accumulation steps unless the model already
        # normalised it over the whole accumulated batch; the penalty must count once per step.
        scaled = getattr(self, "loss_is_scaled_for_ga", None)
        if scaled is None:
            scaled = (getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None) \
                or getattr(self, "compute_loss_func", None) is not None
        if scaled:
            penalty = penalty / max(int(getattr(self, "current_gradient_accumulation_steps", 1) or 1), 1)
        if return_outputs:
            loss, outputs = result
            return loss + penalty.to(loss.dtype), outputs
        return result + penalty.to(result.dtype)

    def log(self, logs, *args, **kwargs):
        n = self._np_log_sums[2]
        if n and "loss" in logs:
            logs = {**logs, "np_r_attn": self._np_log_sums[0] / n, "np_r_mlp": self._np_log_sums[1] / n}
            self._np_log_sums = [0.0, 0.0, 0]
        sp = getattr(self, "np_sparsify", None)
        if sp is not None and "loss" in logs and sp.last_sparsity is not None:
            logs = {**logs, "np_sparsity": sp.last_sparsity}
            if sp.last_target is not None:
                logs["np_target_sparsity"] = sp.last_target
                logs["np_cut_sparsity"] = sp.cut_sparsity
            if sp.multipliers is not None:
                logs["np_mult_attn"], logs["np_mult_mlp"] = sp.multipliers["attn"], sp.multipliers["mlp"]
        return super().log(logs, *args, **kwargs)


class NeuroPruneTrainer(NeuroPruneTrainerMixin, Trainer):
    """``transformers.Trainer`` with NeuroPrune: ``NeuroPruneTrainer(..., neuroprune=NeuroPruneArguments(...))``."""
