"""fairseq: --np-proximal (exact zeros, same objective as the gradient mode, decoupled step) and
--np-target-sparsity (reached without finalize), in-process and from the command line."""
import copy
import re
from types import SimpleNamespace

import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.trainer import Trainer

from neuroprune_fairseq.core.penalties import pa_row_weight
from neuroprune_fairseq.core.target import proximal_step_
from neuroprune_fairseq.fairseq_adapter.sites import matrices, model_sparsity
from neuroprune_fairseq.fairseq_adapter.checkpoints import load
from neuroprune_fairseq.fairseq_adapter.sparsify import Sparsifier, check_sparsify_setup

from conftest import TINY_ARCH, USER_DIR, run_cli

BASE = TINY_ARCH + [
    "--user-dir", USER_DIR, "--task", "neuroprune_translation", "--label-smoothing", "0.1",
    "--optimizer", "adam", "--lr", "0.005", "--max-tokens", "500", "--log-interval", "5",
    "--no-progress-bar", "--seed", "1", "--num-workers", "0", "--cpu", "--np-theta", "0.3",
]


def _trainer(bin_dir, extra):
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(bin_dir), *TINY_ARCH, "--user-dir", USER_DIR, "--task",
                                                "neuroprune_translation", "--label-smoothing", "0.1", "--cpu",
                                                "--dropout", "0", "--max-tokens", "500", "--max-epoch", "1", *extra])
    cfg = convert_namespace_to_omegaconf(args)
    torch.manual_seed(1)
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return task, model, criterion, Trainer(cfg, task, model, criterion)


@pytest.mark.parametrize("penalty,scale", [("neuroprune", "batch"), ("l1", "token")])
def test_one_sgd_update_is_gradient_step_then_prox_with_lr_times_penalty_weight(tiny_data, penalty, scale):
    """SGD, one update: w <- prox_{lr * c R}(w - lr * grad(task loss) / sample_size), where c is the
    per-token weight the gradient mode gives the penalty (batch: alpha / sample_size; token: alpha)."""
    lr, alpha, beta = 0.5, 0.8, 3.0
    task, model, criterion, trainer = _trainer(tiny_data / "bin", [
        "--criterion", "neuroprune_ce", "--np-penalty", penalty, "--np-penalty-scale", scale, "--np-alpha", str(alpha),
        "--np-beta", str(beta), "--np-eps", "0.05", "--np-proximal", "--np-no-head-pruning", "--optimizer", "sgd",
        "--lr", str(lr)])
    sample = next(task.get_batch_iterator(dataset=task.dataset("train"), max_tokens=500).next_epoch_itr(shuffle=False))
    ref = copy.deepcopy(model).train()
    loss, sample_size, log = criterion(ref, sample)
    with torch.no_grad():
        plain = type(criterion).__mro__[1].forward(criterion, ref, sample)[0]  # label_smoothed_cross_entropy
    assert float(loss) == pytest.approx(float(plain), rel=1e-6)  # the penalty is not in the loss ...
    assert log["np_r_attn"] > 0 and log["np_r_mlp"] >= 0  # ... but still measured and logged
    loss.backward()
    with torch.no_grad():
        for p in ref.parameters():
            if p.grad is not None:
                p -= lr * p.grad / sample_size
    c = 1.0 / sample_size if scale == "batch" else 1.0
    roles = Sparsifier(SimpleNamespace(np_proximal=True, np_target_sparsity=None))
    roles.criterion = criterion
    proximal_step_(roles.roles(ref), lr * alpha * c, lr * beta * c)

    trainer.train_step([sample])
    got, want = model.state_dict(), ref.state_dict()
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-6, rtol=1e-5), k
    zeros = sum(int((w == 0).sum()) for w in matrices(model))
    assert zeros == sum(int((w == 0).sum()) for w in matrices(ref)) and zeros > 0


def test_setup_errors_name_the_fix():
    def cfg(**kw):
        base = dict(np_proximal=False, np_target_sparsity=None, np_target_start=0.0, np_target_end=0.75,
                    fp16=False, bf16=False, memory_efficient_fp16=False, memory_efficient_bf16=False,
                    max_epoch=3, max_update=0, np_target_gain=0.05)
        return SimpleNamespace(**{**base, **kw})

    with pytest.raises(ValueError, match="0 <= S < 100"):
        check_sparsify_setup(cfg(np_target_sparsity=100.0))
    with pytest.raises(ValueError, match="--max-epoch or --max-update"):
        check_sparsify_setup(cfg(np_target_sparsity=50.0, max_epoch=0))
    # --fp16 / --bf16: the step acts on the fp32 master copy (tests/test_mixed_precision_sparsify.py)
    for flags in ({"fp16": True}, {"bf16": True}, {"fp16": True, "memory_efficient_fp16": True}):
        check_sparsify_setup(cfg(np_proximal=True, **flags))
        check_sparsify_setup(cfg(np_target_sparsity=50.0, **flags))
    with pytest.raises(ValueError, match="--np-target-gain must be a finite number > 0"):
        check_sparsify_setup(cfg(np_target_sparsity=50.0, np_target_gain=0.0))


def test_task_config_reads_precision_flags_from_fairseq():
    """The task's checks must see fairseq's real precision flags (a field missing from the task
    config makes a check a silent no-op), and checkpoints written with those fields must keep loading."""
    from neuroprune_fairseq.fairseq_adapter.task import NeuroPruneTranslationConfig

    names = set(NeuroPruneTranslationConfig.__dataclass_fields__)
    assert {"fp16", "bf16", "memory_efficient_fp16", "memory_efficient_bf16"} <= names
    with pytest.raises(ValueError, match="--criterion neuroprune_ce or l1_ce"):
        Sparsifier.check_criterion(object())


def test_criterion_without_penalty_is_refused_before_training(tiny_data):
    p = run_cli("fairseq_cli.train", ["bin", *BASE, "--criterion", "label_smoothed_cross_entropy", "--np-proximal",
                                      "--max-epoch", "1", "--save-dir", "ck_bad"], cwd=tiny_data, check=False)
    assert p.returncode != 0 and "--criterion neuroprune_ce or l1_ce" in p.stderr
    assert "begin training" not in p.stdout + p.stderr


def _row_weights(path, eps):
    sd = torch.load(path, map_location="cpu")["model"]
    return float(torch.cat([pa_row_weight(v, eps) for k, v in sd.items() if k.endswith(("fc1.weight", "fc2.weight"))]).mean())


def test_proximal_run_makes_exact_zeros_and_eq1_row_weights_grow(tiny_data):
    p = run_cli("fairseq_cli.train", ["bin", *BASE, "--criterion", "neuroprune_ce", "--np-penalty-scale", "token",
                                      "--np-alpha", "1", "--np-beta", "10", "--np-eps", "1e-2", "--np-proximal",
                                      "--np-prox-metric", "euclidean", "--max-epoch", "3", "--save-dir", "ck_prox"], cwd=tiny_data)
    log = p.stdout + p.stderr
    r = [_row_weights(tiny_data / "ck_prox" / f"checkpoint{e}.pt", 1e-2) for e in (1, 2, 3)]
    assert r[0] < r[1] < r[2], r  # rich get richer: sparse MLP rows get sparser
    model = load(str(tiny_data / "ck_prox" / "checkpoint_last.pt"), str(tiny_data / "bin")).model
    qkv = [w for n, w in model.named_parameters() if n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))]
    assert sum(int((w == 0).sum()) for w in qkv) > 0
    rep = model_sparsity(model)
    assert rep.zero > 0.2 * rep.dense  # exact zeros, no finalize threshold
    spars = [float(x) for x in re.findall(r"\| train \| epoch 00\d .*?\| sparsity ([\d.]+)", log)]
    assert len(spars) == 3 and spars == sorted(spars)


def test_target_sparsity_reached_without_finalize(tiny_data):
    target = 60.0
    p = run_cli("fairseq_cli.train", ["bin", *BASE, "--criterion", "neuroprune_ce", "--np-alpha", "0.05", "--np-beta", "0.1",
                                      "--np-proximal", "--np-target-sparsity", str(target), "--max-epoch", "3",
                                      "--np-target-mode", "cut", "--np-prox-metric", "euclidean",
                                      "--save-dir", "ck_target_sparsity"], cwd=tiny_data)
    log = p.stdout + p.stderr
    model = load(str(tiny_data / "ck_target_sparsity" / "checkpoint_last.pt"), str(tiny_data / "bin")).model
    rep = model_sparsity(model)
    assert target <= rep.sparsity <= target + 0.5, rep
    inner = [(float(t), float(s)) for t, s in re.findall(r"train_inner .*?target_sparsity=([\d.]+),.*? sparsity=([\d.]+)", log)]
    assert len(inner) >= 4 and inner[0][0] < inner[-1][0] == target  # logged every interval, ramping up
    epoch3 = [l for l in log.splitlines() if "| train | epoch 003" in l][0]
    assert "| target_sparsity 60 " in epoch3


@pytest.mark.parametrize("penalty", ["neuroprune", "l1"])
def test_target_sparsity_made_by_the_penalties(tiny_data, penalty):
    """--np-target-mode penalty (the default): the controller drives the proximal strengths so the
    penalties make the zeros; the run ends within half a point above S, the cut made little, and
    the log says how much the cut made (cut_sparsity) and where the strengths went."""
    target = 50.0
    save = f"ck_driven_{penalty}"
    p = run_cli("fairseq_cli.train", ["bin", *BASE, "--criterion", "neuroprune_ce", "--np-penalty", penalty,
                                      "--np-alpha", "0.05", "--np-beta", "0.1", "--np-no-head-pruning",
                                      "--np-target-sparsity", str(target), "--np-target-gain", "0.5",
                                      "--max-epoch", "6", "--save-dir", save], cwd=tiny_data)
    log = p.stdout + p.stderr
    assert "mode penalty, proximal metric optimizer" in log
    # the sparsity of the model that is evaluated: finalize removes the neurons with no input
    # (the controller counts their fc2 columns as removed) and nothing else changes
    from neuroprune_fairseq.commands.finalize import finalize

    info = finalize(str(tiny_data / save / "checkpoint_last.pt"), str(tiny_data / save / "final.pt"), 0.0,
                    str(tiny_data / "bin"), overwrite=True)
    assert target <= info["sparsity"] <= target + 0.5, info
    last = [l for l in log.splitlines() if "| train | epoch 006" in l][0]
    cut = float(re.search(r"\| cut_sparsity ([\d.]+)", last).group(1))
    assert cut < 0.25 * target, last  # the penalties made at least three quarters of S
    mults = [float(m) for m in re.findall(r"mult_mlp=([\d.e+-]+)", log)]
    assert mults and max(mults) > 1.5  # the strengths were driven up from beta


def test_strong_penalties_zero_whole_input_groups_and_mlp_rows(tiny_data):
    """Eq. 2's prox zeroes whole input groups of [Q; K; V] and Eq. 1's zeroes whole rows, and
    finalize removes them with the same outputs (counted by the structure report)."""
    from neuroprune_fairseq.core.policy import structure
    from neuroprune_fairseq.fairseq_adapter.sites import attention_sites, mlp_sites

    run_cli("fairseq_cli.train", ["bin", *BASE, "--criterion", "neuroprune_ce", "--np-penalty-scale", "token",
                                  "--np-alpha", "2", "--np-beta", "2", "--np-proximal", "--np-no-head-pruning",
                                  "--max-epoch", "2", "--save-dir", "ck_strong"], cwd=tiny_data)
    model = load(str(tiny_data / "ck_strong" / "checkpoint_last.pt"), str(tiny_data / "bin")).model
    st = structure(attention_sites(model), mlp_sites(model))
    assert st["input_groups_zeroed"] > 0, st
    assert st["fc2_rows_zero"] + st["mlp_neurons_dead"] > 0, st
    assert st["structured_share"] > 0


def test_penalty_mode_resumes_with_the_controllers_state(tiny_data):
    """The controller's strengths are saved in the checkpoint (task_state) and a run resumed from
    a checkpoint inside the first epoch ends with exactly the uninterrupted run's weights."""
    import shutil

    run = ["bin", *BASE, "--criterion", "neuroprune_ce", "--np-alpha", "0.05", "--np-beta", "0.1", "--np-no-head-pruning",
           "--np-target-sparsity", "40", "--np-target-gain", "0.5", "--max-epoch", "2", "--disable-validation",
           "--save-interval-updates", "3", "--dropout", "0"]
    run_cli("fairseq_cli.train", [*run, "--save-dir", "ck_ctl_ref"], cwd=tiny_data)
    mid = torch.load(tiny_data / "ck_ctl_ref" / "checkpoint_1_3.pt", map_location="cpu", weights_only=False)
    saved = mid["task_state"]["neuroprune_sparsifier"]["controller"]
    assert saved["updates"] == 3 and saved["log_mult"]["mlp"] != 0.0
    os_dir = tiny_data / "ck_ctl_resume"
    os_dir.mkdir(exist_ok=True)
    shutil.copy(tiny_data / "ck_ctl_ref" / "checkpoint_1_3.pt", os_dir / "checkpoint_last.pt")
    p = run_cli("fairseq_cli.train", [*run, "--save-dir", "ck_ctl_resume"], cwd=tiny_data)
    assert "resumed the target controller" in p.stdout + p.stderr
    a = torch.load(tiny_data / "ck_ctl_ref" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    b = torch.load(os_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert a["task_state"]["neuroprune_sparsifier"] == b["task_state"]["neuroprune_sparsifier"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
