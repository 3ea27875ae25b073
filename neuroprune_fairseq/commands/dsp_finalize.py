"""Finalise a DSP run: keep the hard top-K heads of the learned gate logits, remove the
others physically, and save a normal ``neuroprune_transformer`` checkpoint without gates.

    python -m neuroprune_fairseq.commands.dsp_finalize --path ckpt/checkpoint_last.pt --output dsp_final.pt \
        [--data data-bin] [--heads K] [--empty-modules zero|keep-best] [--report report.json]

The output loads in stock ``fairseq-generate DATA --user-dir neuroprune_fairseq --path dsp_final.pt``.
``--data`` overrides the data directory stored in the checkpoint (only its dictionaries are read).
"""
import argparse
import json
import logging
import sys
from typing import Dict, Optional

import fairseq  # noqa: F401  (before the plugin, so that it registers its components)
from omegaconf import OmegaConf, open_dict

from .. import plugin  # noqa: F401
from ..core.dsp import top_k_heads
from ..fairseq_adapter import checkpoints
from ..fairseq_adapter.head_gates import finalize_heads_
from ..fairseq_adapter.sites import head_counts

logger = logging.getLogger("neuroprune_fairseq.dsp_finalize")


def save_finalized(model, state: Dict, output: str, info: Dict) -> None:
    """Write ``model`` as a plain fairseq checkpoint: the criterion's gates, the optimizer
    state (shapes no longer match) and the DSP criterion/task settings are dropped."""
    new = {k: v for k, v in state.items() if k not in ("model", "criterion", "last_optimizer_state")}
    new["model"] = model.state_dict()
    cfg = new.get("cfg")
    if cfg is not None:
        cfg = OmegaConf.create(OmegaConf.to_container(cfg), flags={"allow_objects": True}) if not isinstance(cfg, dict) else cfg
        arch = checkpoints.neuroprune_arch(cfg.model)  # a stock transformer: its neuroprune_ twin loads pruned shapes
        if arch:
            checkpoints.set_arch_(cfg.model, arch)
        with open_dict(cfg):
            ls = float(cfg.criterion.get("label_smoothing", 0.0)) if cfg.get("criterion") is not None else 0.0
            cfg.criterion = {"_name": "label_smoothed_cross_entropy", "label_smoothing": ls,
                             "sentence_avg": False, "ignore_prefix_size": 0, "report_accuracy": False}
            if cfg.task.get("_name") == "dsp_translation":
                cfg.task._name = "translation"
                cfg.task.pop("dsp_mode", None)
                cfg.task.pop("dsp_pretrained", None)
        new["cfg"] = cfg
    new["neuroprune_finalize"] = info
    checkpoints.save(new, output)


def summary(ck: checkpoints.Checkpoint, report: Dict, seq_len: int = 20) -> Dict:
    """NeuroPrune's finalisation report (:func:`neuroprune_fairseq.commands.finalize.describe`: params,
    sparsity, FLOPs against the dense model), with DSP's head counts: ``heads_per_module``
    and ``heads_kept`` count active heads (a zeroed placeholder head counts 0),
    ``physical_heads_per_module`` the heads present."""
    from .finalize import describe

    info = describe(ck.model, ck.dense(), seq_len)
    info.update(report)
    return info


def finalize_and_report(ck: checkpoints.Checkpoint, keep, scores, empty: str, output: str, extra: Dict,
                        report_path: Optional[str] = None, hidden=("kept_heads",)) -> Dict:
    """Shared tail of the DSP and Michel commands: keep ``keep`` heads physically, write the
    checkpoint and the JSON report, print the report (without the ``hidden`` keys)."""
    state = ck.state
    report = finalize_heads_(ck.model, keep, scores=scores, empty=empty)
    info = summary(ck, {**extra, "kept_heads": keep, **report})
    save_finalized(ck.model, state, output, info)
    if report_path:
        with open(report_path, "w") as f:
            json.dump(info, f)
    print(json.dumps({k: v for k, v in info.items() if k not in hidden}))
    from .finalize import generate_command

    print(f"wrote {output}; translate with it (needs the plugin: --user-dir):\n  "
          f"{generate_command(output, state['cfg'].task.data)}")
    return info


def check_heads(k: int, total: int, name: str = "--heads") -> None:
    """The bounds training uses for ``--dsp-heads``: 1 <= K <= the model's heads."""
    if not 1 <= k <= total:
        raise SystemExit(f"{name} must be in [1, {total}] (the model has {total} heads; training accepts the "
                         f"same range for --dsp-heads), got {k}")


def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", required=True, help="checkpoint of a dsp_ce run (holds the gate logits)")
    ap.add_argument("--output", required=True, help="where to write the finalised checkpoint")
    ap.add_argument("--data", default=None, help="data-bin directory (overrides the one stored in the checkpoint)")
    ap.add_argument("--heads", type=int, default=None, help="K (default: the run's --dsp-heads)")
    ap.add_argument("--empty-modules", choices=["zero", "keep-best"], default="zero",
                    help="module whose heads are all outside the top-K: 'zero' keeps one zeroed placeholder head "
                         "(module outputs its out_proj bias, same as the masked model); 'keep-best' keeps its best head")
    ap.add_argument("--report", default=None, help="write the finalisation report (JSON) here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")
    from .finalize import check_output

    check_output(args.path, args.output, overwrite=True)  # never the training checkpoint itself
    ck = checkpoints.load(args.path, args.data, from_checkpoint=True)
    model, state = ck.model, ck.state
    crit = state.get("criterion") or {}
    if "dsp_logits" not in crit:
        raise SystemExit(f"{args.path} holds no DSP gate logits (criterion state keys: {sorted(crit)}); was it trained with --criterion dsp_ce?")
    logits = crit["dsp_logits"].float()
    counts = head_counts(model)
    if sum(counts) != logits.numel():
        raise SystemExit(f"{logits.numel()} gate logits for a model with {sum(counts)} heads")
    k = args.heads if args.heads is not None else int(state["cfg"].criterion.dsp_heads)
    check_heads(k, sum(counts), "--heads" if args.heads is not None else "the run's --dsp-heads")
    keep = top_k_heads(logits, k, counts)
    info = finalize_and_report(ck, keep, logits, args.empty_modules, args.output,
                               {"method": "dsp", "K": k}, args.report)
    logger.info(f"DSP finalised: K={k}, heads per module {'.'.join(map(str, info['heads_per_module']))}, "
                f"sparsity {info['sparsity']:.2f}%, FLOPs ratio {info['flops_ratio']:.3f}, params {info['params']} -> {args.output}")
    return info


if __name__ == "__main__":
    main(sys.argv[1:])
