"""--np-target-heads end to end: fairseq-train on tiny data reaches exactly K heads at the
scheduled epoch (1 and 2 data-parallel workers), and bad budgets fail before training."""
import re

import pytest

from conftest import run_cli
from test_fairseq_e2e import TRAIN, heads_in_checkpoint, train_two_workers

K = 10  # of 36 heads in 6 modules; reached after epoch 2 of 3 (schedule: 36 -> 23 -> 10 -> 10)
TARGET = ["--np-target-heads", str(K), "--np-target-epoch", "2", "--max-epoch", "3", "--np-theta", "0.05"]
EPOCH_LINE = re.compile(r"NeuroPrune epoch (\d{3}): heads (\d+) -> (\d+) \(target (\d+): theta=(\S+) .*?; heads per module ([\d.]+);")
PLAN_LINE = re.compile(r"^\s+\S+(?: \[\w+\])?: heads (\d+)->(\d+) kept=\[([\d, ]*)\] merged=(\S+)", re.M)


def check_log(log):
    epochs = EPOCH_LINE.findall(log)
    assert [int(e[0]) for e in epochs] == [1, 2, 3], log[-3000:]
    assert [int(e[3]) for e in epochs] == [23, K, K]  # the schedule
    assert [int(e[2]) for e in epochs] == [23, K, K]  # reached exactly, K at the target epoch
    for e in epochs:
        per_module = [int(x) for x in e[5].split(".")]
        assert len(per_module) == 6 and min(per_module) >= 1 and sum(per_module) == int(e[2])
        float(e[4]) if e[4] != "none" else None  # a theta is logged
    # every removed head was merged into a head kept by the same pass
    plans = PLAN_LINE.findall(log)
    assert len(plans) == 18
    merged_any = False
    for before, after, kept, merged in plans:
        kept = {int(x) for x in kept.split(",") if x.strip()}
        assert len(kept) == int(after) >= 1
        if merged != "-":
            merged_any = True
            for pair in merged.split(","):
                i, j = map(int, pair.split("->"))
                assert j in kept and i not in kept
    assert merged_any
    assert "--np-theta 0.05 is not used" in log
    return [[int(x) for x in e[5].split(".")] for e in epochs]


@pytest.fixture(scope="module")
def target_run(tiny_data):
    p = run_cli("fairseq_cli.train", ["bin", *TRAIN, *TARGET, "--save-dir", "ck_target"], cwd=tiny_data)
    return tiny_data, p.stdout + p.stderr


def test_target_heads_exact_at_scheduled_epoch(target_run):
    d, log = target_run
    per_epoch = check_log(log)
    for epoch, expected in ((1, 23), (2, K), (3, K)):
        heads, _ = heads_in_checkpoint(d / "ck_target" / f"checkpoint{epoch}.pt")
        assert sum(heads) == expected and min(heads) >= 1
        assert heads == per_epoch[epoch - 1]
    assert "| train | epoch 003" in log  # trained on with K heads


def test_target_heads_two_workers_reach_the_same_k(target_run, tmp_path):
    d, single_log = target_run
    outs = train_two_workers(["bin", *TRAIN, *TARGET, "--save-dir", str(tmp_path / "ddp")], d)
    assert outs[0].count("the 2 workers pruned identically") == 3
    per_epoch = check_log(outs[0])
    assert sum(per_epoch[-1]) == K
    heads, _ = heads_in_checkpoint(tmp_path / "ddp" / "checkpoint_last.pt")
    assert heads == per_epoch[-1]


@pytest.mark.parametrize("extra, message", [
    (["--np-target-heads", "5"], "below the number of attention modules (6)"),
    (["--np-target-heads", "37"], "more than the model's 36 heads"),
    (["--np-target-heads", "10", "--np-target-epoch", "4"], "is after --max-epoch 3"),
    (["--np-target-heads", "10", "--np-target-heads-per-module", "2"], "not both"),
    (["--np-target-heads", "10", "--np-no-head-pruning"], "drop --np-no-head-pruning"),
    (["--np-target-heads-per-module", "7"], "use at most 6"),
])
def test_bad_budget_is_refused_at_setup(tiny_data, extra, message):
    from fairseq import tasks

    from test_fairseq_e2e import _cfg

    cfg = _cfg(["--max-epoch", "3", *extra])
    cfg.task.data = str(tiny_data / "bin")
    with pytest.raises(ValueError) as e:
        tasks.setup_task(cfg.task).build_model(cfg.model)
    assert message in str(e.value)


def test_bad_budget_fails_before_training(tiny_data):
    p = run_cli("fairseq_cli.train", ["bin", *TRAIN, "--max-epoch", "3", "--np-target-heads", "5", "--save-dir", "never_t"],
                cwd=tiny_data, check=False)
    assert p.returncode != 0 and "use K >= 6" in p.stderr, p.stderr[-2000:]
    assert "begin training epoch" not in p.stdout + p.stderr
