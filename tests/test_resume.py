"""Resume from any checkpoint, as a user on a cluster does: end of epoch, --save-interval-updates,
a --max-update stop, and a run killed at random updates.

fairseq 0.12's own resume is bitwise deterministic here (CPU, one thread, dropout seeded by the
update number) for checkpoints inside the first epoch; from a checkpoint in a later epoch (or at
the end of one) the resumed run sees another batch order than the uninterrupted one (measured
with --np-no-head-pruning too: fairseq's behaviour, not the plugin's). So: from first-epoch
checkpoints the resumed run must end with exactly the uninterrupted run's heads and weights;
from any checkpoint, every epoch must be pruned exactly once, each pruning must start from the
heads the previous one left (none lost, none done twice), and every end-of-epoch checkpoint must
hold the heads its pruning left."""
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from conftest import run_cli
from test_fairseq_e2e import TRAIN, heads_in_checkpoint

# --disable-validation: the configuration that used to save the end-of-epoch checkpoint unpruned
RUN = TRAIN + ["--max-epoch", "3", "--disable-validation", "--save-interval-updates", "5"]
PRUNED = re.compile(r"NeuroPrune epoch (\d+): heads (\d+) -> (\d+)")


@pytest.fixture(scope="module")
def reference(tiny_data):
    p = run_cli("fairseq_cli.train", ["bin", *RUN, "--save-dir", "ref"], cwd=tiny_data)
    log = p.stdout + p.stderr
    state = torch.load(tiny_data / "ref" / "checkpoint1.pt", map_location="cpu")
    per_epoch = state["optimizer_history"][-1]["num_updates"]
    return tiny_data, log, per_epoch


def same_model(a, b):
    sa, sb = torch.load(a, map_location="cpu")["model"], torch.load(b, map_location="cpu")["model"]
    assert sa.keys() == sb.keys()
    return all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def test_disable_validation_saves_pruned_checkpoints_every_epoch_including_the_last(reference):
    d, log, _ = reference
    pruned = {int(e): int(after) for e, _, after in PRUNED.findall(log)}
    assert sorted(pruned) == [1, 2, 3], log[-3000:]  # the last epoch is pruned too
    assert pruned[3] < 36
    for epoch, after in pruned.items():
        heads, _ = heads_in_checkpoint(d / "ref" / f"checkpoint{epoch}.pt")
        assert sum(heads) == after  # the end-of-epoch checkpoint is of the pruned model
        # pruned before that checkpoint was written
        assert log.index(f"NeuroPrune epoch {epoch:03d}") < log.index(f"checkpoint{epoch}.pt")
    assert heads_in_checkpoint(d / "ref" / "checkpoint_last.pt")[0] == heads_in_checkpoint(d / "ref" / "checkpoint3.pt")[0]


def check_pruning_chain(logs, save, first_epoch=1, heads_before=36):
    """Each epoch from ``first_epoch`` pruned exactly once, starting from the heads the previous
    pruning left, and its end-of-epoch checkpoint holds what it left."""
    events = [(int(e), int(a), int(b)) for log in logs for e, a, b in PRUNED.findall(log)]
    assert [e for e, _, _ in events] == list(range(first_epoch, 4)), events
    for epoch, before, after in events:
        assert before == heads_before, events
        assert sum(heads_in_checkpoint(save / f"checkpoint{epoch}.pt")[0]) == after
        heads_before = after


@pytest.mark.parametrize("start", ["interval_epoch1", "max_update_epoch1", "end_of_epoch1", "interval_epoch2"])
def test_resume_from_any_checkpoint_prunes_every_epoch_once(reference, tmp_path, start):
    d, ref_log, per_epoch = reference
    save = tmp_path / "ck"
    save.mkdir()
    if start == "max_update_epoch1":  # a run stopped by --max-update in the middle of epoch 1
        updates, epoch = 7, 1
        run_cli("fairseq_cli.train", ["bin", *RUN, "--save-dir", str(save), "--max-update", str(updates)], cwd=d)
    else:
        updates, epoch = {"interval_epoch1": (5, 1), "end_of_epoch1": (per_epoch, 2), "interval_epoch2": (10, 2)}[start]
        name = "checkpoint1.pt" if start == "end_of_epoch1" else f"checkpoint_{epoch}_{updates}.pt"
        shutil.copy(d / "ref" / name, save / "checkpoint_last.pt")
    assert 0 < updates % per_epoch or start == "end_of_epoch1"
    p = run_cli("fairseq_cli.train", ["bin", *RUN, "--save-dir", str(save)], cwd=d)
    log = p.stdout + p.stderr
    assert f"(epoch {epoch} @ {updates} updates)" in log  # really resumed from that checkpoint
    ref_heads = {int(e): int(a) for e, a, _ in PRUNED.findall(ref_log)}
    check_pruning_chain([log], save, epoch, ref_heads[epoch])
    if epoch == 1:  # fairseq's resume is deterministic: the very same model as the uninterrupted run
        assert heads_in_checkpoint(save / "checkpoint3.pt")[0] == heads_in_checkpoint(d / "ref" / "checkpoint3.pt")[0]
        assert same_model(save / "checkpoint3.pt", d / "ref" / "checkpoint3.pt")


def run_until_killed(d, save, kill_at):
    """Train; SIGKILL the run once it logs update ``kill_at`` (None: let it finish)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "fairseq_cli.train", "bin", *RUN, "--save-dir", str(save),
                             "--log-interval", "1"], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"num_updates=(\d+),", line)
        if kill_at is not None and m and "train_inner" in line and int(m.group(1)) >= kill_at:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    return proc.returncode, "".join(lines)


def test_killed_at_random_updates_and_resumed_ends_like_the_uninterrupted_run(reference, tmp_path):
    d, _, per_epoch = reference
    total = 3 * per_epoch
    saves = {u for u in range(1, total + 1) if u % 5 == 0 or u % per_epoch == 0}
    # kill between saves (fairseq copies checkpoint_last.pt non-atomically; killing inside that
    # copy is fairseq's own problem, reported as a corrupted checkpoint)
    candidates = [u for u in range(2, total - 1) if u not in saves and u + 1 not in saves]
    seed = int(os.environ.get("NEUROPRUNE_FAULT_SEED", "0"))
    kills = sorted(random.Random(seed).sample([u for u in candidates if u > per_epoch], 2)
                   + random.Random(seed + 1).sample([u for u in candidates if u < per_epoch], 1))
    save = tmp_path / "faulty"
    logs = []
    for kill_at in kills:
        rc, log = run_until_killed(d, save, kill_at)
        logs.append(log)
        assert rc == -signal.SIGKILL, f"seed {seed}, kill at {kill_at}:\n{log[-3000:]}"
    rc, log = run_until_killed(d, save, None)
    logs.append(log)
    assert rc == 0, log[-3000:]
    resumed = sum("Loaded checkpoint" in l for l in logs)
    assert resumed == sum(k > min(saves) for k in kills), f"seed {seed}, kills {kills}"  # resumed after each kill past a save
    # a kill never falls between a pruning and the checkpoint after it (see candidates), so each
    # epoch's pruning must appear exactly once over all the runs' logs, in a consistent chain
    check_pruning_chain(logs, save)
    if max(kills) < per_epoch:  # all kills in epoch 1: fairseq's resume is deterministic
        assert same_model(save / "checkpoint3.pt", d / "ref" / "checkpoint3.pt"), f"seed {seed}, kills {kills}"


def test_killed_in_the_first_epoch_and_resumed_is_the_uninterrupted_run(reference, tmp_path):
    d, _, per_epoch = reference
    save = tmp_path / "faulty1"
    logs = []
    for kill_at in (2, 6):  # between the saves at 5 and at the end of epoch 1
        rc, log = run_until_killed(d, save, kill_at)
        logs.append(log)
        assert rc == -signal.SIGKILL, log[-3000:]
    rc, log = run_until_killed(d, save, None)
    logs.append(log)
    assert rc == 0, log[-3000:]
    check_pruning_chain(logs, save)
    assert heads_in_checkpoint(save / "checkpoint3.pt")[0] == heads_in_checkpoint(d / "ref" / "checkpoint3.pt")[0]
    assert same_model(save / "checkpoint3.pt", d / "ref" / "checkpoint3.pt")


def test_checkpoint_metrics_hold_only_fairseq_meters_and_legacy_text_meters_still_load(reference):
    """fairseq rebuilds logged meters on resume by class name from fairseq.logging.meters."""
    from fairseq.logging import meters

    d, _, _ = reference
    state = torch.load(d / "ref" / "checkpoint_2_10.pt", map_location="cpu")
    saved = [entry for agg in state["extra_state"]["metrics"].values() for entry in agg]
    assert {cls for _, _, cls, _ in saved} <= {"AverageMeter", "SumMeter", "TimeMeter", "StopwatchMeter"}
    default = state["extra_state"]["metrics"]["default"]
    per_module = {key: st["val"] for _, key, cls, st in default if key.startswith("_heads_per_module_")}
    assert len(per_module) == 6
    # a metrics entry as plugin 0.1.0 wrote it (a custom TextMeter) loads, and shows live counts
    legacy = list(default) + [(50, "heads_per_module", "TextMeter", {"text": "9.9"})]
    md = meters.MetersDict()
    md.load_state_dict(legacy)
    assert md.get_smoothed_values()["heads_per_module"] == ".".join(str(round(per_module[k])) for k in sorted(per_module))
    assert "heads_per_module" not in [key for _, key, _, _ in md.state_dict()]  # not saved again
