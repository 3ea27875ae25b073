"""DSP on fairseq: task ``dsp_translation``, fairseq's translation task plus
``--dsp-mode joint|pipelined`` (pipelined: every model weight frozen, only the gates train) and
``--dsp-pretrained`` (load a trained model's weights before training, e.g. for pipelined
mode). It builds criterion ``dsp_ce`` (:mod:`.dsp_criterion`) with the head counts of the
model it built, passes it the update number for the temperature schedule, and lets it step
the gates with their own learning rate (``--dsp-lr``).
"""
import logging
from dataclasses import dataclass, field
from typing import List, Optional

from fairseq.dataclass import ChoiceEnum
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from .dsp_criterion import DSP_MODES, DSPCriterion
from .sites import attention_sites, head_counts

logger = logging.getLogger(__name__)


@dataclass
class DSPTranslationConfig(TranslationConfig):
    dsp_mode: ChoiceEnum(list(DSP_MODES)) = field(default="joint", metadata={"help": "joint: train model weights and gate logits together; pipelined: freeze every model weight and train only the gates (give a trained model with --dsp-pretrained)"})
    dsp_pretrained: Optional[str] = field(default=None, metadata={"help": "fairseq checkpoint whose model weights are loaded before training (needed by pipelined mode); a resumed run's checkpoint_last.pt still takes precedence"})


@register_task("dsp_translation", dataclass=DSPTranslationConfig)
class DSPTranslationTask(TranslationTask):
    """Translation with DSP head gates (the gates live in criterion ``dsp_ce``)."""

    cfg: DSPTranslationConfig

    def __init__(self, cfg, src_dict, tgt_dict):
        super().__init__(cfg, src_dict, tgt_dict)
        self._head_counts: Optional[List[int]] = None  # of the model built, for the gates
        self._criterion: Optional[DSPCriterion] = None  # the dsp_ce criterion built by this task

    def build_criterion(self, cfg, from_checkpoint=False):
        """``dsp_ce`` gets the head counts of the model built and ``--dsp-mode``."""
        if getattr(cfg, "_name", None) != "dsp_ce":
            return super().build_criterion(cfg, from_checkpoint)
        if self._head_counts is None:
            raise ValueError("--criterion dsp_ce gates the heads of the model this task built: build the model first")
        from fairseq import criterions

        # the registry's builder (what criterions.build_criterion calls) passes extra keywords on
        self._criterion = criterions.build_criterion_(cfg, self, from_checkpoint=from_checkpoint,
                                                      head_counts=self._head_counts, mode=self.cfg.dsp_mode)
        return self._criterion

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if not attention_sites(model):
            raise ValueError(f"model {type(model).__name__} has no fairseq MultiheadAttention module; DSP needs an attention model")
        self._head_counts = head_counts(model)
        if self.cfg.dsp_pretrained and not from_checkpoint:
            from fairseq import checkpoint_utils

            state = checkpoint_utils.load_checkpoint_to_cpu(self.cfg.dsp_pretrained)
            model.load_state_dict(state["model"], strict=True, model_cfg=cfg)
            counts = head_counts(model)
            if counts != self._head_counts:
                raise ValueError(f"--dsp-pretrained has pruned heads {counts}; DSP needs a dense model")
            logger.info(f"DSP: loaded model weights from {self.cfg.dsp_pretrained}")
        if self.cfg.dsp_mode == "pipelined" and not from_checkpoint:
            if not self.cfg.dsp_pretrained:
                raise ValueError("--dsp-mode pipelined trains only the gates of a trained model: give it with --dsp-pretrained")
            for p in model.parameters():
                p.requires_grad_(False)
            logger.info("DSP pipelined: all model weights frozen, only the gate logits train")
        return model

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if isinstance(criterion, DSPCriterion):
            criterion.set_num_updates(update_num)
        loss, sample_size, logging_output = super().train_step(sample, model, criterion, optimizer, update_num, ignore_grad)
        if isinstance(criterion, DSPCriterion):
            logging_output["dsp_gate_skip"] = int(criterion.skip_nonfinite_gate_grad_())
        return loss, sample_size, logging_output

    def optimizer_step(self, optimizer, model, update_num):
        if self._criterion is None or not self._criterion.optimizer_step(optimizer):
            return super().optimizer_step(optimizer, model, update_num)
