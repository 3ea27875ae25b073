"""Michel et al. (2019, "Are Sixteen Heads Really Better than One?") importance pruning of a
trained fairseq model to a global budget of K heads, with DSP's finalisation.

    python -m neuroprune_fairseq.commands.head_importance --path checkpoint_best.pt --heads K \
        --output michel_final.pt [--data data-bin] [--subset valid] [--max-tokens 4096] \
        [--no-normalize-by-layer] [--empty-modules zero|keep-best] [--report report.json]

Head importance ``I_h = sum over batches |d loss / d xi_h|`` at gates ``xi = 1`` (the gates
are the same out_proj pre-hooks DSP uses; loss: the summed token NLL of the batch, model in
eval mode). As in Michel et al.'s code, the scores of each attention module are divided by
their l2 norm unless ``--no-normalize-by-layer``. The K most important heads over the whole
model are kept; the others are removed physically (same surgery and checkpoint as DSP).
"""
import argparse
import logging
import sys
from typing import Dict

import fairseq  # noqa: F401
from fairseq import utils

from .. import plugin  # noqa: F401
from ..core.dsp import top_k_heads
from ..fairseq_adapter.head_gates import head_importance
from ..fairseq_adapter import checkpoints
from ..fairseq_adapter.sites import head_counts
from .dsp_finalize import finalize_and_report

logger = logging.getLogger("neuroprune_fairseq.head_importance")


def main(argv=None) -> Dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--path", required=True, help="trained (dense) fairseq checkpoint")
    ap.add_argument("--output", required=True, help="where to write the pruned checkpoint")
    ap.add_argument("--heads", type=int, required=True, help="K: heads kept in the whole model")
    ap.add_argument("--data", default=None, help="data-bin directory (overrides the one stored in the checkpoint)")
    ap.add_argument("--subset", default="valid", help="data subset for the importance pass (default: valid)")
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--max-batches", type=int, default=0, help="stop after this many batches (0: the whole subset)")
    ap.add_argument("--no-normalize-by-layer", action="store_true", help="do not divide each module's scores by their l2 norm")
    ap.add_argument("--empty-modules", choices=["zero", "keep-best"], default="zero",
                    help="module with no head in the top-K: 'zero' placeholder head or 'keep-best' (see dsp_finalize)")
    ap.add_argument("--report", default=None, help="write the report (JSON) here")
    args = ap.parse_args(argv)
    from .finalize import check_output

    check_output(args.path, args.output, overwrite=True)  # never the training checkpoint itself
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(levelname)s | %(name)s | %(message)s")

    ck = checkpoints.load(args.path, args.data, from_checkpoint=True)
    model, task = ck.model, ck.task
    counts = head_counts(model)
    if not 1 <= args.heads <= sum(counts):
        raise SystemExit(f"--heads must be in [1, {sum(counts)}]")
    task.load_dataset(args.subset)
    itr = task.get_batch_iterator(
        dataset=task.dataset(args.subset), max_tokens=args.max_tokens,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=True, required_batch_size_multiple=1, seed=1,
    ).next_epoch_itr(shuffle=False)
    batches = (b for i, b in enumerate(itr) if not args.max_batches or i < args.max_batches)
    imp = head_importance(model, batches, task.target_dictionary.pad(), not args.no_normalize_by_layer)
    keep = top_k_heads(imp, args.heads, counts)
    info = finalize_and_report(ck, keep, imp, args.empty_modules, args.output,
                               {"method": "michel", "K": args.heads, "importance": imp.tolist()}, args.report,
                               hidden=("kept_heads", "importance"))
    logger.info(f"Michel importance pruning: K={args.heads}, heads per module "
                f"{'.'.join(map(str, info['heads_per_module']))} -> {args.output}")
    return info


if __name__ == "__main__":
    main(sys.argv[1:])
