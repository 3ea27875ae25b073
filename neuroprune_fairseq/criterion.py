"""``neuroprune_ce``: label-smoothed cross-entropy + alpha * sum R_attn + beta * sum R_mlp.

``l1_ce`` is the paper's baseline: the same, with plain L1 on the same matrices.
"""
import math
from dataclasses import dataclass, field
from typing import List, Sequence, Tuple

import torch
from fairseq import metrics
from fairseq.criterions import register_criterion
from fairseq.criterions.label_smoothed_cross_entropy import (
    LabelSmoothedCrossEntropyCriterion,
    LabelSmoothedCrossEntropyCriterionConfig,
)
from fairseq.logging.meters import Meter
from torch import Tensor, nn

from .core import attention_group_penalty, l1_penalty, mlp_preferential_attachment_penalty
from .fairseq_roles import ATTN_KINDS, MLP_KINDS, attention_modules, attn_linears, dense_matrix_count, mlp_modules


def _kinds(value: str, allowed: Sequence[str], option: str) -> Tuple[str, ...]:
    kinds = tuple(k.strip() for k in value.split(",") if k.strip()) if value not in ("", "none") else ()
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise ValueError(f"--{option} got {bad}; choose a comma-separated subset of {list(allowed)} (or 'none')")
    return kinds


def check_nonnegative_finite(**values: float) -> None:
    for name, v in values.items():
        if v is None or not (v == v) or v in (float("inf"), float("-inf")) or v < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v}")


@dataclass
class NeuroPruneCriterionConfig(LabelSmoothedCrossEntropyCriterionConfig):
    np_alpha: float = field(default=0.05, metadata={"help": "weight of the attention group penalty (Eq. 2), summed over attention modules"})
    np_beta: float = field(default=0.1, metadata={"help": "weight of the MLP preferential-attachment penalty (Eq. 1), summed over MLP blocks"})
    np_eps: float = field(default=1e-4, metadata={"help": "|w| < eps counts as unconnected in Eq. 1's row weights (paper: 1e-4)"})
    np_penalty: str = field(default="neuroprune", metadata={"help": "'neuroprune' (Eq. 1 + Eq. 2) or 'l1' (the paper's baseline: plain L1 on q,k,v with alpha, fc1,fc2 with beta)"})
    np_penalty_scale: str = field(default="batch", metadata={"help": "'batch' (default, the paper's literal task_loss + alpha*R_attn + beta*R_mlp with fairseq's summed task loss): the penalty is added once to every batch's summed loss, so its weight per target token is alpha/tokens-per-batch; this is the scale on which the paper's MT grid (alpha 0.005..0.5) is meaningful. 'token': the penalty is added per target token (sample_size * (alpha*R_attn + beta*R_mlp)), so the objective is mean token loss + alpha*R_attn + beta*R_mlp independent of --max-tokens (then alpha must be ~1e3x smaller)"})
    np_attn_modules: str = field(default="encoder,decoder,cross", metadata={"help": "attention modules penalised: comma-separated subset of encoder,decoder,cross, or none"})
    np_mlp_modules: str = field(default="encoder,decoder", metadata={"help": "MLP blocks penalised: comma-separated subset of encoder,decoder, or none"})


def neuroprune_regularizer(
    attn: List[Tuple[Tensor, Tensor, Tensor]], mlp: List[Tuple[Tensor, Tensor]], eps: float, penalty: str = "neuroprune"
) -> Tuple[Tensor, Tensor]:
    """``(sum_l R_attn, sum_l R_mlp)`` over the given (q, k, v) and (fc1, fc2) weights."""
    zero = (attn[0][0] if attn else mlp[0][0]).new_zeros(())
    if penalty == "l1":
        r_attn = l1_penalty(w for qkv in attn for w in qkv) if attn else zero
        r_mlp = l1_penalty(w for pair in mlp for w in pair) if mlp else zero
    else:
        r_attn = sum((attention_group_penalty(q, k, v) for q, k, v in attn), zero)
        r_mlp = sum((mlp_preferential_attachment_penalty(f1, f2, eps) for f1, f2 in mlp), zero)
    return r_attn, r_mlp


class TextMeter(Meter):
    """Shows a string (heads per attention module) in fairseq's log lines."""

    def __init__(self, text: str = ""):
        self.text = text

    def update(self, text):
        self.text = text

    def state_dict(self):
        return {"text": self.text}

    def load_state_dict(self, state_dict):
        self.text = state_dict.get("text", "")

    def reset(self):
        pass

    @property
    def smoothed_value(self) -> str:
        return self.text


@register_criterion("neuroprune_ce", dataclass=NeuroPruneCriterionConfig)
class NeuroPruneCriterion(LabelSmoothedCrossEntropyCriterion):
    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 np_alpha=0.05, np_beta=0.1, np_eps=1e-4, np_penalty="neuroprune", np_penalty_scale="batch",
                 np_attn_modules="encoder,decoder,cross", np_mlp_modules="encoder,decoder"):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy)
        check_nonnegative_finite(np_alpha=np_alpha, np_beta=np_beta, np_eps=np_eps)
        if np_penalty not in ("neuroprune", "l1"):
            raise ValueError(f"--np-penalty must be 'neuroprune' or 'l1', got {np_penalty!r}")
        if np_penalty_scale not in ("batch", "token"):
            raise ValueError(f"--np-penalty-scale must be 'batch' or 'token', got {np_penalty_scale!r}")
        self.scale = np_penalty_scale
        self.alpha, self.beta, self.np_eps, self.penalty = np_alpha, np_beta, np_eps, np_penalty  # self.eps is label smoothing
        self.attn_kinds = _kinds(np_attn_modules, ATTN_KINDS, "np-attn-modules")
        self.mlp_kinds = _kinds(np_mlp_modules, MLP_KINDS, "np-mlp-modules")

    def _np_modules(self, model: nn.Module):
        """Attention and MLP modules, found once per model (pruning keeps module objects)."""
        # a plain dict: modules stored as criterion attributes would become its submodules
        cache = self.__dict__.setdefault("_np_cache", {})
        if cache.get("model_id") != id(model):
            cache.update(
                model_id=id(model),
                attn_all=[m for _, _, m in attention_modules(model)],
                attn=[m for _, _, m in attention_modules(model, self.attn_kinds)],
                mlp=[layer for _, _, layer in mlp_modules(model, self.mlp_kinds)],
                # Linear modules (not their weights: loading may replace a Parameter)
                linears=[lin for _, _, m in attention_modules(model) for lin in attn_linears(m)]
                + [lin for _, _, layer in mlp_modules(model) for lin in (layer.fc1, layer.fc2)],
                dense_count=dense_matrix_count(model),
            )
        return cache["attn_all"], cache["attn"], cache["mlp"]

    def penalties(self, model: nn.Module) -> Tuple[Tensor, Tensor]:
        _, attn_mods, mlp_mods = self._np_modules(model)
        attn = [(m.q_proj.weight, m.k_proj.weight, m.v_proj.weight) for m in attn_mods]
        mlp = [(layer.fc1.weight, layer.fc2.weight) for layer in mlp_mods]
        if not attn and not mlp:
            p = next(model.parameters())
            return p.new_zeros(()), p.new_zeros(())
        return neuroprune_regularizer(attn, mlp, self.np_eps, self.penalty)

    def forward(self, model, sample, reduce=True):
        loss, sample_size, logging_output = super().forward(model, sample, reduce=reduce)
        inner = getattr(model, "module", model)  # a data-parallel wrapper holds the model
        r_attn, r_mlp = self.penalties(inner)
        # fairseq sums the task loss over target tokens and divides the summed gradient by the
        # total sample size (over accumulation steps and workers). 'batch' adds the penalty once
        # per batch (the paper's literal task_loss + alpha R), 'token' once per target token.
        reg = self.alpha * r_attn + self.beta * r_mlp
        added = reg if self.scale == "batch" else sample_size * reg
        if model.training and not getattr(self.task, "penalty_by_proximal_step", False):
            loss = loss + added  # (with --np-proximal the task applies it as a proximal step instead)
        with torch.no_grad():
            attn_all = self._np_modules(inner)[0]
            dense_count = self._np_cache["dense_count"]
            heads = [m.num_heads for m in attn_all]
            ws = [lin.weight for lin in self._np_cache["linears"]]
            present = sum(w.numel() for w in ws)
            zero = torch.stack([(w == 0).sum() for w in ws]).sum().to(reg.dtype)
            # one device->host transfer for all logged tensors
            r_a, r_m, pen, nz = torch.stack([r_attn.detach(), r_mlp.detach(), added.detach(), zero]).tolist()
        logging_output.update({
            "np_r_attn": r_a,
            "np_r_mlp": r_m,
            "np_pen": pen,
            "np_n": 1,
            "np_heads": sum(heads),
            "np_sparsity": 100.0 * (dense_count - present + nz) / max(dense_count, 1),
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
        text = ".".join(str(round(float(sum(log.get(k, 0) for log in logging_outputs)) / n)) for k in keys)
        metrics.log_custom(TextMeter, "heads_per_module", text)

    @staticmethod
    def logging_outputs_can_be_summed() -> bool:
        return True


@register_criterion("l1_ce", dataclass=NeuroPruneCriterionConfig)
class L1Criterion(NeuroPruneCriterion):
    """The paper's l1 baseline: ``--criterion l1_ce`` == ``neuroprune_ce --np-penalty l1``."""

    def __init__(self, task, sentence_avg, label_smoothing, ignore_prefix_size=0, report_accuracy=False,
                 np_alpha=0.05, np_beta=0.1, np_eps=1e-4, np_penalty="l1", np_penalty_scale="batch",
                 np_attn_modules="encoder,decoder,cross", np_mlp_modules="encoder,decoder"):
        super().__init__(task, sentence_avg, label_smoothing, ignore_prefix_size, report_accuracy,
                         np_alpha, np_beta, np_eps, "l1", np_penalty_scale, np_attn_modules, np_mlp_modules)
