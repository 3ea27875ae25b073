"""``neuroprune_ce``: label-smoothed cross-entropy + alpha * sum R_attn + beta * sum R_mlp.

``l1_ce`` is the paper's baseline: the same, with plain L1 on the same matrices.
"""
import logging
import math
from dataclasses import dataclass, field
from typing import Sequence, Tuple

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from torch import Tensor, nn

from ..core import policy
from ..core.sites import ATTN_KINDS, MLP_KINDS, parse_kinds
from ..core.sparsity import SparsityReport
from .contracts import NeuroPruneTask, penalty_by_proximal_step
from .sites import attention_sites, dense_matrix_count, mlp_sites

logger = logging.getLogger(__name__)


def check_nonnegative_finite(**values: float) -> None:
    for name, v in values.items():
        if v is None or not (v == v) or v in (float("inf"), float("-inf")) or v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")


def check_positive_finite(**values: float) -> None:
    check_nonnegative_finite(**values)
    for name, v in values.items():
        if v <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {v} (it would make the penalty identically zero)")


@dataclass
class NeuroPruneCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    np_alpha: float = field(default=0.05, metadata={"help": "weight of the attention group penalty (Eq. 2), summed over attention modules"})
    np_beta: float = field(default=0.1, metadata={"help": "weight of the MLP preferential-attachment penalty (Eq. 1), summed over MLP blocks"})
    np_eps: float = field(default=1e-4, metadata={"help": "|w| < eps counts as unconnected in Eq. 1's row weights (paper: 1e-4)"})
    np_penalty: str = field(default="neuroprune", metadata={"help": "'neuroprune' (Eq. 1 + Eq. 2) or 'l1' (the paper's baseline: plain L1 on q,k,v with alpha, fc1,fc2 with beta)"})
    np_penalty_scale: str = field(default="batch", metadata={"help": "'batch' (default, the paper's literal task_loss + alpha*R_attn + beta*R_mlp with fairseq's summed task loss): the penalty is added once to every batch's summed loss, so its weight per target token is alpha/tokens-per-batch; this is the scale on which the paper's MT grid (alpha 0.005..0.5) is meaningful. 'token': the penalty is added per target token (sample_size * (alpha*R_attn + beta*R_mlp)), so the objective is mean token loss + alpha*R_attn + beta*R_mlp independent of --max-tokens (then alpha must be ~1e3x smaller)"})
    np_attn_modules: str = field(default="encoder,decoder,cross", metadata={"help": "attention modules penalised: comma-separated subset of encoder,decoder,cross, or none"})
    np_mlp_modules: str = field(default="encoder,decoder", metadata={"help": "MLP blocks penalised: comma-separated subset of encoder,decoder, or none"})


def per_module_text(name: str):
    """A fairseq derived meter for :func:`log_per_module`: the last logged count of every
    module, joined as '6.5.4...'."""
    prefix = f"_{name}_"

    def text(meters) -> str:
        keys = sorted(k for k in meters if k.startswith(prefix))
        return ".".join(str(round(meters[k].val)) for k in keys if meters[k].val is not None)

    return text


def log_per_module(name: str, values: Sequence[float], weight: float) -> None:
    """Log one count per module (heads per attention module) so that fairseq prints it as one
    field ``name 6.5.4...`` and can checkpoint it: plain scalar meters ``_name_000``... (hidden:
    fairseq does not print '_' keys) and a derived meter ``name`` (never saved). fairseq rebuilds
    saved meters by class name from its own module on resume, so a custom meter class would make
    every mid-epoch checkpoint unloadable."""
    for i, v in enumerate(values):
        metrics.log_scalar(f"_{name}_{i:03d}", v, weight, round=1)
    metrics.log_derived(name, per_module_text(name), priority=50)


@register_criterion("neuroprune_ce", dataclass=NeuroPruneCriterionConfig)
class NeuroPruneCriterion(LabelSmoothedCrossEntropyCriterion):
    """The penalties on top of label-smoothed cross-entropy. Under a :class:`.contracts.NeuroPruneTask`
    the task prunes the heads and may apply the penalty as a proximal step instead
    (``penalty_by_proximal_step``); the task's sparsifier reads this criterion's
    :class:`.contracts.PenaltySettings` (``alpha``, ``beta``, ``np_eps``, ``penalty``, ``scale``,
    ``attn_kinds``, ``mlp_kinds``)."""

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 np_alpha=0.05, np_beta=0.1, np_eps=1e-4, np_penalty="neuroprune", np_penalty_scale="batch",
                 np_attn_modules="encoder,decoder,cross", np_mlp_modules="encoder,decoder"):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        check_nonnegative_finite(np_alpha=np_alpha, np_beta=np_beta)
        check_positive_finite(np_eps=np_eps)  # |w| < 0 never holds: Eq. 1's row weights would all be 0
        if not isinstance(task, NeuroPruneTask):
            logger.warning(
                f"--criterion {self.__class__.__name__} with --task {type(task).__name__}: the penalties are "
                "trained but heads are never pruned; head pruning needs --task neuroprune_translation"
            )
        if np_penalty not in ("neuroprune", "l1"):
            raise ValueError(f"--np-penalty must be 'neuroprune' or 'l1', got {np_penalty!r}")
        if np_penalty_scale not in ("batch", "token"):
            raise ValueError(f"--np-penalty-scale must be 'batch' or 'token', got {np_penalty_scale!r}")
        self.scale = np_penalty_scale
        self.alpha, self.beta, self.np_eps, self.penalty = np_alpha, np_beta, np_eps, np_penalty  # self.eps is label smoothing
        self.attn_kinds = parse_kinds(np_attn_modules, ATTN_KINDS, "--np-attn-modules")
        self.mlp_kinds = parse_kinds(np_mlp_modules, MLP_KINDS, "--np-mlp-modules")

    def _np_sites(self, model: nn.Module):
        """Attention and MLP sites, found once per model (pruning keeps their Linear modules)."""
        # a plain dict: modules stored as criterion attributes would become its submodules
        cache = self.__dict__.setdefault("_np_cache", {})
        if cache.get("model_id") != id(model):
            attn_all, mlp_all = attention_sites(model), mlp_sites(model)
            cache.update(
                model_id=id(model),
                attn_all=attn_all,
                mlp_all=mlp_all,
                attn=[s for s in attn_all if s.kind in self.attn_kinds],
                mlp=[s for s in mlp_all if s.kind in self.mlp_kinds],
                dense_count=dense_matrix_count(model),
            )
        return cache

    def penalties(self, model: nn.Module) -> Tuple[Tensor, Tensor]:
        sites = self._np_sites(model)
        return policy.penalties(sites["attn"], sites["mlp"], self.np_eps, self.penalty, next(model.parameters()).new_zeros(()))

    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        inner = getattr(model, "module", model)  # a data-parallel wrapper holds the model
        r_attn, r_mlp = self.penalties(inner)
        # fairseq sums the task loss over target tokens and divides the summed gradient by the
        # total sample size (over accumulation steps and workers). 'batch' adds the penalty once
        # per batch (the paper's literal task_loss + alpha R), 'token' once per target token.
        reg = self.alpha * r_attn + self.beta * r_mlp
        added = reg if self.scale == "batch" else sample_size * reg
        if model.training and not penalty_by_proximal_step(self.task):
            loss = loss + added  # (with --np-proximal the task applies it as a proximal step instead)
        with torch.no_grad():
            sites = self._np_sites(inner)
            heads = policy.site_head_counts(sites["attn_all"])
            ws = policy.site_matrices(sites["attn_all"], sites["mlp_all"])  # weights read now: loading may replace them
            # the count in int64 and all logged values in float64: a count cast to the loss dtype
            # overflows fp16 (max 65,504) to inf under --fp16 / --memory-efficient-fp16
            zero = torch.stack([(w == 0).sum() for w in ws]).sum()
            # one device->host transfer for all logged tensors
            r_a, r_m, pen, nz = torch.stack([r_attn.detach().double(), r_mlp.detach().double(),
                                             added.detach().double(), zero.double()]).tolist()
            report = SparsityReport(sites["dense_count"], sum(w.numel() for w in ws), nz)
        logging_output.update({
            "np_r_attn": r_a,
            "np_r_mlp": r_m,
            "np_pen": pen,
            "np_n": 1,
            "np_heads": sum(heads),
            "np_sparsity": report.sparsity,
            **{f"np_h{i:03d}": h for i, h in enumerate(heads)},
        })
        return loss, sample_size, logging_output

    @classmethod
    def reduce_metrics(cls, logging_outputs) -> None:
        super().reduce_metrics(logging_outputs)
        n = float(sum(log.get("np_n", 0) for log in logging_outputs))  # tensors after a DDP sum
        if not n:
            return
        sample_size = float(sum(log.get("sample_size", 0) for log in logging_outputs)) or 1.0
        metrics.log_scalar("r_attn", sum(log.get("np_r_attn", 0) for log in logging_outputs) / n, n, round=3)
        metrics.log_scalar("r_mlp", sum(log.get("np_r_mlp", 0) for log in logging_outputs) / n, n, round=3)
        # in the units of fairseq's `loss` column (per target token, base 2), so the two compare
        metrics.log_scalar("penalty", sum(log.get("np_pen", 0) for log in logging_outputs) / sample_size / math.log(2),
                           sample_size, round=4)
        metrics.log_scalar("heads", sum(log.get("np_heads", 0) for log in logging_outputs) / n, n, round=1)
        metrics.log_scalar("sparsity", sum(log.get("np_sparsity", 0) for log in logging_outputs) / n, n, round=2)
        keys = sorted({k for log in logging_outputs for k in log if k.startswith("np_h") and k != "np_heads"})
        log_per_module("heads_per_module", [float(sum(log.get(k, 0) for log in logging_outputs)) / n for k in keys], n)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


@dataclass
class L1CriterionConfig(NeuroPruneCriterionConfig):
    np_penalty: str = field(default="l1", metadata={"help": NeuroPruneCriterionConfig.__dataclass_fields__["np_penalty"].metadata["help"]})


@register_criterion("l1_ce", dataclass=L1CriterionConfig)
class L1Criterion(NeuroPruneCriterion):
    """The paper's l1 baseline: ``--criterion l1_ce`` is ``neuroprune_ce`` with ``--np-penalty l1`` by default."""
