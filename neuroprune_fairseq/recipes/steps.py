"""The resumable steps of every recipe's point: ``fairseq-train`` (one command line for all of
them), finalisation (``python -m neuroprune_fairseq.commands.finalize``) and run-once markers.
A finished step leaves a marker and is not run again."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from . import runner

COMMON_TRAIN = [
    # no --source-lang/--target-lang: fairseq infers the pair from a bin dir holding one pair
    "--task", "neuroprune_translation",
    "--num-workers", "0", "--no-epoch-checkpoints", "--log-format", "simple", "--log-interval", "50",
    "--seed", "1", "--max-source-positions", "1024", "--max-target-positions", "1024",
]


def train_command(bin_dir: Path, save_dir: Path, extra: Sequence, user_dir: str = runner.USER_DIR) -> List:
    """The ``fairseq-train`` command line of every recipe: the plugin, ``save_dir``, the common
    settings (:data:`COMMON_TRAIN`; a later ``--task`` / ``--seed`` in ``extra`` wins), then ``extra``."""
    return [runner.tool("fairseq-train"), bin_dir, "--user-dir", user_dir, "--save-dir", save_dir, *COMMON_TRAIN, *extra]


def train(bin_dir: Path, save_dir: Path, extra: Sequence[str], logfile: Path, user_dir: str = runner.USER_DIR) -> float:
    """``fairseq-train``; resumable (fairseq restarts from ``save_dir/checkpoint_last.pt``)."""
    save_dir = Path(save_dir)
    done = save_dir / ".done"
    if done.exists():
        return float(json.loads(done.read_text())["train_wall_s"])
    wall = runner.run(train_command(bin_dir, save_dir, extra, user_dir), logfile=logfile)
    save_dir.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps({"train_wall_s": wall}))
    return wall


def once(marker: Path, fn: Callable[[], float]) -> float:
    """Run ``fn`` unless ``marker`` says it ran; returns its wall seconds (stored in the marker)."""
    if marker.exists():
        return json.loads(marker.read_text())["wall_s"]
    wall = fn()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"wall_s": wall}))
    return wall


def finalize(ckpt: Path, out: Path, threshold: float = 1e-3, logfile: Optional[Path] = None,
             data: Optional[Path] = None) -> Dict:
    """``data``: the data-bin folder, for checkpoints whose stored data path does not resolve here
    (e.g. a dense model trained elsewhere)."""
    js = Path(out).with_suffix(".json")
    if not (Path(out).exists() and js.exists()):
        runner.run_module("neuroprune_fairseq.commands.finalize",
                          ["--path", ckpt, "--output", out, "--threshold", str(threshold), "--json", js, "--overwrite",
                           *(["--data", data] if data else [])], logfile=logfile)
    return json.loads(js.read_text())
