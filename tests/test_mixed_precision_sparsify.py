"""--np-proximal and --np-target-sparsity under fairseq's FP16Optimizer (--fp16, --fp16
--fp16-no-flatten-grads, --bf16), on CPU on the optimizer wrapper itself.

The optimizer steps an fp32 master copy and copies it into the fp16/bf16 model; the sparsity step
(:class:`Sparsifier`, as the task's ``optimizer_step`` calls it) must act on that master copy, read
Adam's ``exp_avg_sq`` of the master slices for its per-weight step, and leave master == model
weights with the same zeros, which stay zero in both across further steps.
"""
from types import SimpleNamespace

import pytest
import torch

from neuroprune_fairseq.core.target import proximal_step_
from neuroprune_fairseq.fairseq_adapter.fairseq_optim import MasterCopy, has_master_copy, master_copy, master_weights
from neuroprune_fairseq.fairseq_adapter.sites import matrices, model_sparsity
from neuroprune_fairseq.fairseq_adapter.sparsify import Sparsifier

from test_mixed_precision_surgery import build, step

LR = 0.001  # build()'s --lr
MASTER_FLAGS = [["--fp16"], ["--fp16", "--fp16-no-flatten-grads"], ["--bf16"]]
IDS = ["fp16-flat", "fp16-no-flatten", "bf16"]


def criterion(alpha, beta):
    """What the Sparsifier reads from the neuroprune_ce criterion ('token' scale: alpha, beta per token)."""
    return SimpleNamespace(attn_kinds=("encoder", "decoder", "cross"), mlp_kinds=("encoder", "decoder"),
                           penalty="neuroprune", np_eps=1e-2, scale="token", alpha=alpha, beta=beta)


def sparsifier(target=None, mode="cut", updates=8):
    return Sparsifier(SimpleNamespace(
        np_proximal=True, np_target_sparsity=target, np_target_start=0.0, np_target_end=0.5, np_target_mode=mode,
        np_target_gain=0.5, np_prox_metric="optimizer", max_update=updates, max_epoch=0, update_freq=[1],
        save_dir="", restore_file=""))


def update(sp, model, opt, crit, i):
    """One update as the task's optimizer_step runs it."""
    sp.record(crit, 10.0, False)
    sp.before_step(model, i, None, opt)
    step(model, opt, 100 + i)
    sp.after_step(model, LR, i, None, opt)


def masters_of_matrices(model, opt):
    index = {id(p): i for i, p in enumerate(model.parameters())}
    masters = master_weights(opt)
    return [masters[index[id(w)]] for w in matrices(model)]


def check_master_equals_model(model, opt):
    for m, p in zip(master_weights(opt), model.parameters()):
        assert m.dtype == torch.float32
        assert torch.equal(m.to(p.dtype), p.data)  # master == model weights (cast)
    zm = sum(int((m == 0).sum()) for m in masters_of_matrices(model, opt))
    zw = sum(int((w == 0).sum()) for w in matrices(model))
    assert zm == zw == model_sparsity(model).zero  # the same zeros in both, the count the log reports
    return zm


@pytest.mark.parametrize("flags", MASTER_FLAGS, ids=IDS)
def test_proximal_step_acts_on_the_master_copy_with_adams_metric(flags, monkeypatch):
    model, opt = build(flags, monkeypatch)
    assert has_master_copy(opt)
    alpha, beta = 20.0, 40.0
    crit, sp = criterion(alpha, beta), sparsifier()
    for i in range(4):
        # the reference: the proximal step on copies of the master, with Adam's step from the
        # master's exp_avg_sq (the state of the flat vector / the fp32 tensor, sliced by hand)
        sp.record(crit, 10.0, False)
        sp.before_step(model, i, None, opt)
        step(model, opt, 100 + i)
        roles = sp.roles(model)
        masters = dict(zip(map(id, matrices(model)), masters_of_matrices(model, opt)))  # views, not copies
        ref = {id(w): masters[id(w)].clone() for w in roles.counted}
        group = opt.optimizer.param_groups[0]
        steps = {}
        for w in roles.counted:
            v = _exp_avg_sq_of(model, opt, w)
            t = _step_count(opt)
            steps[id(ref[id(w)])] = LR / ((v / (1 - group["betas"][1] ** t)).sqrt() + group["eps"])
        proximal_step_(roles_on(roles, ref), alpha, beta, lambda w: steps[id(w)])

        sp.after_step(model, LR, i, None, opt)
        dtype = next(model.parameters()).dtype
        for w in roles.counted:
            want = ref[id(w)]
            assert torch.equal(w.data, want.to(dtype))  # the model holds the stepped master
            assert torch.equal(masters[id(w)], want.masked_fill(want.to(dtype) == 0, 0.0))  # fp16 underflow: 0
        zeros = check_master_equals_model(model, opt)
    assert zeros > 0
    # the fp32 bits survive: the master is not just the model's weights cast back
    assert any(not torch.equal(m, m.to(p.dtype).float()) for m, p in zip(master_weights(opt), model.parameters()))


def roles_on(roles, tensors):
    """``roles`` with every weight ``w`` replaced by ``tensors[id(w)]``."""
    import dataclasses

    v = lambda w: tensors[id(w)]  # noqa: E731
    return dataclasses.replace(roles, attn=[tuple(v(w) for w in qkv) for qkv in roles.attn],
                               mlp=[([v(f) for f in fc1s], v(fc2)) for fc1s, fc2 in roles.mlp],
                               counted=[v(w) for w in roles.counted])


def _exp_avg_sq_of(model, opt, w):
    params = list(model.parameters())
    i = next(j for j, p in enumerate(params) if p is w)
    fp32 = opt.fp32_params
    if isinstance(fp32, dict):
        flat = fp32[None]
        off = sum(p.numel() for p in params[:i])
        return opt.optimizer.state[flat]["exp_avg_sq"][off:off + w.numel()].view(w.shape).clone()
    return opt.optimizer.state[fp32[i]]["exp_avg_sq"].clone()


def _step_count(opt):
    fp32 = opt.fp32_params
    first = fp32[None] if isinstance(fp32, dict) else fp32[0]
    return float(opt.optimizer.state[first]["step"])


@pytest.mark.parametrize("mode", ["cut", "penalty"])
@pytest.mark.parametrize("flags", MASTER_FLAGS, ids=IDS)
def test_target_sparsity_zeros_stay_zero_in_master_and_model(flags, mode, monkeypatch):
    """--np-target-sparsity 50 over 8 updates (ramp to update 4): the target is reached on the
    master and the model alike, and once the zeros are masked (every update in 'cut' mode, after
    the ramp in 'penalty' mode) no zero comes back in either, across further optimizer steps."""
    target, updates = 50.0, 8
    model, opt = build(flags, monkeypatch)
    strength = {"cut": 1e-3, "penalty": 1e-2}[mode]
    crit, sp = criterion(strength, 2 * strength), sparsifier(target, mode, updates)
    prev = None
    for i in range(updates):
        update(sp, model, opt, crit, i)
        check_master_equals_model(model, opt)
        zeros = ([m == 0 for m in masters_of_matrices(model, opt)], [w == 0 for w in matrices(model)])
        masked = mode == "cut" or sp._ramp_done(i, None)  # the mask of this update was taken
        if prev is not None and masked:
            for before, now in zip(prev[0] + prev[1], zeros[0] + zeros[1]):
                assert bool(now[before].all()), f"update {i}: a zero came back"
        prev = zeros
        if sp._ramp_done(i + 1, None):  # counted as finalize counts (it folds neurons with no input)
            assert finalized_sparsity(sp, model) >= target - 1e-9, (i, model_sparsity(model))
    assert target <= finalized_sparsity(sp, model) <= target + 1.0, model_sparsity(model)
    assert sp.cut_zeros > 0 if mode == "cut" else sp.cut_zeros < 0.05 * model_sparsity(model).dense
    # further plain optimizer steps (no sparsity step) keep the zeros the master holds
    for s in (7, 8):
        sp.before_step(model, updates, None, opt)
        masks = [m == 0 for m in masters_of_matrices(model, opt)]
        step(model, opt, s)
        sp.after_step(model, LR, updates, None, opt)  # the mask re-applied (the cut has nothing to add)
        for mask, m, w in zip(masks, masters_of_matrices(model, opt), matrices(model)):
            assert bool((m[mask] == 0).all()) and bool((w[mask] == 0).all())
        check_master_equals_model(model, opt)


def finalized_sparsity(sp, model):
    from neuroprune_fairseq.core.controller import folded_outputs

    rep = model_sparsity(model)
    return 100.0 * (rep.zero + folded_outputs(sp.roles(model))) / rep.dense


def test_memory_efficient_fp16_needs_no_master(monkeypatch):
    """--memory-efficient-fp16 steps the model's own weights: the same Sparsifier path as fp32."""
    model, opt = build(["--memory-efficient-fp16"], monkeypatch)
    assert not has_master_copy(opt) and master_copy(opt) is None
    crit, sp = criterion(1e-3, 2e-3), sparsifier(50.0, "cut", 4)
    for i in range(4):
        update(sp, model, opt, crit, i)
    assert model_sparsity(model).sparsity >= 50.0


def test_adams_step_that_overflows_fp16_is_taken_in_fp32(monkeypatch):
    """--memory-efficient-fp16: the prox steps the fp16 weights; Adam's step of a weight whose
    second moment is 0 is lr / eps = 1e5, above fp16's largest value: the prox computes in fp32
    (before, the inf threshold made NaN weights and every later step overflowed)."""
    model, opt = build(["--memory-efficient-fp16"], monkeypatch)
    crit, sp = criterion(1e-3, 2e-3), sparsifier()
    sp.record(crit, 10.0, False)
    step(model, opt, 1)
    with torch.no_grad():
        model.fc1.weight[:2] = 0.5  # no entry below eps: Eq. 1's row weight is 0, the row is kept
    for w in (model.attn.q_proj.weight, model.fc1.weight):
        opt.optimizer.state[w]["exp_avg_sq"][:2] = 0.0  # two rows that never had a gradient
    sp.after_step(model, LR, 0, None, opt)
    for w in matrices(model):
        assert bool(torch.isfinite(w).all())
    assert bool((model.fc1.weight[:2] == 0.5).all())  # 0 * (lr / eps) is 0, not inf * 0 = NaN
    assert bool((model.attn.q_proj.weight[:2] == 0).all())  # the huge step zeroes them


def test_master_copy_out_of_step_is_refused(monkeypatch):
    model, opt = build(["--fp16"], monkeypatch)
    step(model, opt, 1)
    with torch.no_grad():
        model.fc1.weight = torch.nn.Parameter(model.fc1.weight[:-1].clone())  # changed without the surgery
    opt.fp16_params = list(model.parameters())
    with pytest.raises(ValueError, match="out of step"):
        MasterCopy(opt)


@pytest.mark.parametrize("extra, mode", [([], "penalty"), (["--fp16-no-flatten-grads"], "cut")],
                         ids=["flat-penalty", "no-flatten-cut"])
def test_fairseq_trainer_fp16_target_sparsity_in_process(tiny_data, extra, mode, monkeypatch):
    """fairseq's Trainer with --fp16 (FP16Optimizer on CPU; the flat master copy is keyed by the CUDA
    device index, None here) and --np-target-sparsity: the task's optimizer_step reaches the target
    on the master copy and the model alike, with the same zeros (Adam's metric for the prox)."""
    from fairseq.optim import FP16Optimizer
    from test_sparsify_e2e import _trainer

    monkeypatch.setattr(torch.cuda, "current_device", lambda: None)
    task, model, criterion, trainer = _trainer(tiny_data / "bin", [
        "--fp16", *extra, "--criterion", "neuroprune_ce", "--np-alpha", "0.05", "--np-beta", "0.1",
        "--np-no-head-pruning", "--np-target-sparsity", "40", "--np-target-mode", mode, "--max-update", "6",
        "--optimizer", "adam", "--lr", "0.005", "--fp16-init-scale", "4"])
    itr = task.get_batch_iterator(dataset=task.dataset("train"), max_tokens=500).next_epoch_itr(shuffle=False)
    for _, sample in zip(range(6), itr):
        trainer.train_step([sample])
    assert isinstance(trainer.optimizer, FP16Optimizer) and trainer.get_num_updates() == 6  # no step skipped
    model, sp = trainer.model, task.np_sparsifier
    assert next(model.parameters()).dtype == torch.float16 and sp.metric == "optimizer"
    assert check_master_equals_model(model, trainer.optimizer) > 0
    assert 40.0 <= finalized_sparsity(sp, model) <= 41.0, model_sparsity(model)
