"""Physical head pruning under fairseq's default data-parallel backend, ``--ddp-backend c10d`` /
``pytorch_ddp`` (PyTorch DDP, rebuilt in place after each pruning: ``fairseq_adapter/ddp.py``).

Two gloo workers on the CPU, on the tiny generated task, must prune the same heads and end with
the same weights as ``legacy_ddp`` and as one worker that takes the same batches per update
(``--update-freq 2``, no dropout): for pruning by theta, ``--np-target-heads`` (with
``--update-freq 2``: the pruning step starts inside the old DDP's ``no_sync()``) and
``--np-target-sparsity``, and when a run resumes from a pruned checkpoint (the wrapper fairseq
builds before loading it holds the dense parameters). On the CPU the runs agree to the last bit;
the tests allow float tolerance.
"""
import re
import shutil

import pytest
import torch

from conftest import run_cli
from test_fairseq_e2e import TRAIN, train_two_workers
from test_target_heads_e2e import TARGET, check_log

# --dropout 0: one worker draws other dropout masks for its 2nd micro-batch than worker 1 does;
# --max-tokens 250: 10 updates per epoch with 2 workers
SAME_BATCHES = ["--dropout", "0", "--max-tokens", "250"]
EPOCH = re.compile(r"NeuroPrune epoch (\d{3}): heads (\d+) -> (\d+) .*?; heads per module ([\d.]+);")
REBUILT = "NeuroPrune: rebuilt FairseqDDP on the current parameters"


def pruning(log):
    """[(epoch, heads before, heads after, heads per module)] as logged."""
    return [(int(e), int(b), int(a), m) for e, b, a, m in EPOCH.findall(log)]


def weights(save_dir, name="checkpoint_last.pt"):
    return torch.load(save_dir / name, map_location="cpu", weights_only=False)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)
        assert torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6), (k, (a[k] - b[k]).abs().max())


def train_one(d, save_dir, extra):
    p = run_cli("fairseq_cli.train", ["bin", *TRAIN, "--save-dir", str(save_dir), *extra], cwd=d)
    return p.stdout + p.stderr


def train_two(d, save_dir, extra, backend):
    return train_two_workers(["bin", *TRAIN, "--save-dir", str(save_dir), *extra], d, backend=backend)[0]


def resume_from(src_dir, epoch, dst_dir):
    """A fresh save dir whose checkpoint_last.pt is ``src_dir``'s end-of-epoch checkpoint."""
    dst_dir.mkdir()
    shutil.copy(src_dir / f"checkpoint{epoch}.pt", dst_dir / "checkpoint_last.pt")
    return dst_dir


@pytest.fixture(scope="module")
def theta_runs(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp_theta")
    extra = [*SAME_BATCHES, "--max-epoch", "3"]
    runs = {"one": (tmp / "one", train_one(tiny_data, tmp / "one", [*extra, "--update-freq", "2"]))}
    for backend in ("legacy_ddp", "c10d"):
        runs[backend] = (tmp / backend, train_two(tiny_data, tmp / backend, extra, backend))
    return tiny_data, tmp, runs


def test_c10d_prunes_like_legacy_ddp_and_one_worker(theta_runs):
    _, _, runs = theta_runs
    plans = {name: pruning(log) for name, (_, log) in runs.items()}
    assert plans["c10d"] == plans["legacy_ddp"] == plans["one"], plans
    plan = plans["c10d"]
    assert [e for e, *_ in plan] == [1, 2, 3]
    pruned = [e for e, before, after, _ in plan if after < before]
    assert pruned and pruned[0] < 3, plan  # the rebuilt DDP then trains a whole epoch
    assert plan[-1][2] < 36
    c10d_log = runs["c10d"][1]
    assert c10d_log.count("the 2 workers pruned identically") == 3
    assert c10d_log.count(REBUILT) == len(pruned)  # once per pruning that removed heads, not otherwise
    assert "rebuilt" not in runs["one"][1]
    assert "| train | epoch 003" in c10d_log
    for epoch in (1, 2, 3):
        c10d = weights(runs["c10d"][0], f"checkpoint{epoch}.pt")
        assert_same_weights(c10d, weights(runs["legacy_ddp"][0], f"checkpoint{epoch}.pt"))
        assert_same_weights(c10d, weights(runs["one"][0], f"checkpoint{epoch}.pt"))


def test_c10d_and_legacy_ddp_resume_from_a_pruned_checkpoint_like_one_worker(theta_runs):
    """fairseq wraps the dense model before the checkpoint load builds the pruned parameters: the
    wrapper is rebuilt at the first step (legacy_ddp's too: it would all-reduce the old ones)."""
    d, tmp, runs = theta_runs
    assert pruning(runs["one"][1])[1][2] < 36  # checkpoint2 holds pruned heads
    extra = [*SAME_BATCHES, "--max-epoch", "3"]
    one = resume_from(runs["one"][0], 2, tmp / "one_resumed")
    train_one(d, one, [*extra, "--update-freq", "2"])
    for backend, rebuilt in (("c10d", REBUILT), ("legacy_ddp", "rebuilt LegacyDistributedDataParallel")):
        two = resume_from(runs[backend][0], 2, tmp / f"{backend}_resumed")
        log = train_two(d, two, extra, backend)
        assert "Loaded checkpoint" in log and log.count(rebuilt) >= 1, log[-3000:]
        assert pruning(log) == pruning(runs["one"][1])[2:]
        assert_same_weights(weights(two), weights(one))


def test_pytorch_ddp_reaches_the_head_target_like_legacy_ddp_with_update_freq(tiny_data, tmp_path):
    extra = [*TARGET, "--update-freq", "2"]
    logs = {b: train_two(tiny_data, tmp_path / b, extra, b) for b in ("legacy_ddp", "pytorch_ddp")}
    per_epoch = check_log(logs["pytorch_ddp"])  # 36 -> 23 -> K -> K, each step merged correctly
    assert per_epoch == check_log(logs["legacy_ddp"])
    assert logs["pytorch_ddp"].count(REBUILT) == 2
    assert_same_weights(weights(tmp_path / "pytorch_ddp"), weights(tmp_path / "legacy_ddp"))


def test_c10d_target_sparsity_with_head_pruning_like_legacy_ddp(tiny_data, tmp_path):
    from neuroprune_fairseq.fairseq_adapter.checkpoints import load
    from neuroprune_fairseq.fairseq_adapter.sites import model_sparsity

    extra = ["--np-proximal", "--np-target-sparsity", "60", "--max-epoch", "3"]
    logs = {b: train_two(tiny_data, tmp_path / b, extra, b) for b in ("legacy_ddp", "c10d")}
    plan = pruning(logs["c10d"])
    assert plan == pruning(logs["legacy_ddp"]) and len(plan) == 3
    assert plan[-1][2] < 36 and logs["c10d"].count(REBUILT) == sum(a < b for _, b, a, _ in plan)
    assert_same_weights(weights(tmp_path / "c10d"), weights(tmp_path / "legacy_ddp"))
    model = load(str(tmp_path / "c10d" / "checkpoint_last.pt"), str(tiny_data / "bin")).model
    assert model_sparsity(model).sparsity >= 60
