"""The parts of the fairseq sparsifier that read a checkpoint or write a report, out of the
per-update path of :mod:`.sparsify`: when an update is the last of its epoch (shared with the
task's epoch-end pruning), the controller's state saved in a checkpoint (a resumed run continues
it), the warning when a run ends below its target, and the epoch's line that splits the sparsity into the points made by the removed weights,
the penalties and the cut, with the structure report."""
import logging
import os
from typing import Optional, Tuple

import torch

from ..core.controller import folded_outputs
from ..core.policy import site_sparsity
from ..core.sparsity import SparsityReport, count_weights
from ..core.structure import format_structure, structure_report
from .sites import attention_sites, mlp_sites

logger = logging.getLogger(__name__)
STATE_KEY = "neuroprune_sparsifier"  # the Sparsifier's state in the checkpoint's task_state


def epoch_ending(train_itr) -> Optional[int]:
    """The training epoch, if the step now taken trains on its last batches (its iterator is
    exhausted: fairseq's grouped iterator takes a step's batches before the step), else None."""
    try:
        return train_itr.epoch if train_itr is not None and train_itr.end_of_epoch() else None
    except AttributeError:  # no epoch started yet
        return None


def saved_state(cfg) -> Tuple[str, Optional[dict], Optional[Exception]]:
    """``(path, state, error)``: the Sparsifier state in the checkpoint a resumed run restarts
    from (``--restore-file`` as fairseq resolves it against ``--save-dir``)."""
    restore = str(getattr(cfg, "restore_file", "") or "checkpoint_last.pt")
    save_dir = str(getattr(cfg, "save_dir", "") or "")
    path = restore if os.path.isabs(restore) else os.path.join(save_dir, restore)
    if restore == "checkpoint_last.pt" or not os.path.exists(path):
        path = os.path.join(save_dir, "checkpoint_last.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        return path, (state.get("task_state") or {}).get(STATE_KEY), None
    except Exception as e:  # no readable checkpoint: the caller says so
        return path, None, e


def epoch_report(model, epoch: int, cut_zeros: int) -> str:
    """``NeuroPrune epoch E sparsity X% = removed R + penalties P + cut C points; <structure>``."""
    attn, mlp = attention_sites(model), mlp_sites(model)
    rep = site_sparsity(attn, mlp)
    removed = 100.0 * (rep.dense - rep.present) / max(rep.dense, 1)
    cut = min(100.0 * cut_zeros / max(rep.dense, 1), rep.sparsity - removed)
    st = structure_report(attn, mlp, rep.dense, rep.present, rep.zero)
    return (f"NeuroPrune epoch {epoch:03d} sparsity {rep.sparsity:.2f}% = removed {removed:.2f} + penalties "
            f"{rep.sparsity - removed - cut:.2f} + cut {cut:.2f} points; {format_structure(st)}")


def warn_if_below_target(roles, target: float) -> None:
    """At the run's last update: say so when the model holds less than the target."""
    present, zero = count_weights(roles.counted)
    got = SparsityReport(roles.dense, present, zero + folded_outputs(roles)).sparsity  # folded: as finalize counts
    if got + 1e-9 < target:
        logger.warning(f"NeuroPrune: --np-target-sparsity {target:g} was not reached: the run ends at "
                       f"{got:.2f}% (the cut could not close the gap; see the log's cut_sparsity)")


def penalty_points(log) -> dict:
    """The reader of :func:`epoch_report`'s line (for the recipes): from a fine-tuning log file, the last
    epoch's split of the sparsity into points made by removed weights, by the penalties and by the cut
    (``NeuroPrune epoch ... = removed R + penalties P + cut C points``)."""
    import re
    from pathlib import Path

    log = Path(log)
    if not log.exists():
        return {}
    found = re.findall(r"= removed ([\d.]+) \+ penalties ([\d.]+) \+ cut ([\d.]+) points", log.read_text(errors="replace"))
    if not found:
        return {}
    r, p_, c = (float(x) for x in found[-1])
    return {"points_removed": r, "points_penalties": p_, "points_cut": c}
