"""The head budget policy (core/head_target.py): schedule, bisection over theta, closest-first
completion; and the HuggingFace adapter's target_heads."""
import pytest
import torch

from neuroprune_fairseq.core.head_target import (
    NO_THETA, candidate_thetas, check_budget, check_target_epoch, choose_theta, complete_closest_first,
    plan_target_heads, plans_at, scheduled_heads)
from neuroprune_fairseq.core.redundancy import head_distance_matrix, plan_from_distance, plan_redundant_heads
from neuroprune_fairseq.core.policy import elim_redundant_
from neuroprune_fairseq.core.surgery import apply_redundancy_plan_


def _dists(counts=(6, 6, 6, 6), seed=0, width=5):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        w = torch.rand(n, width, generator=g)
        out.append((w[:, None] - w[None]).abs().amax(-1).double())
    return out


def test_schedule_is_linear_to_the_target_epoch_and_stays_there():
    # 108 heads -> 25 by epoch 3, pruning after every epoch: 108 - 83/3 per epoch
    assert scheduled_heads(108, 25, 1, 1, 1, 3) == 25 + (83 * 2) // 3 == 80
    assert scheduled_heads(80, 25, 2, 1, 1, 3) == 25 + 55 // 2 == 52
    assert scheduled_heads(52, 25, 3, 1, 1, 3) == 25
    assert scheduled_heads(25, 25, 4, 1, 1, 3) == 25
    # every 2 epochs from epoch 2: pruning epochs 2, 4, 6 up to the target epoch 6
    assert scheduled_heads(36, 6, 2, 2, 2, 6) == 6 + (30 * 2) // 3 == 26
    # already at or below the target: nothing more is removed
    assert scheduled_heads(20, 25, 1, 1, 1, 3) == 20


def test_target_epoch_default_and_errors():
    assert check_target_epoch(0, 1, 1, 5) == 5
    assert check_target_epoch(0, 2, 2, 7) == 6  # last pruning epoch (2, 4, 6) of a 7-epoch run
    assert check_target_epoch(3, 1, 1, 5) == 3
    with pytest.raises(ValueError, match="not a pruning epoch"):
        check_target_epoch(3, 2, 2, 7)
    with pytest.raises(ValueError, match="after --max-epoch"):
        check_target_epoch(6, 1, 1, 5)
    with pytest.raises(ValueError, match="needs --np-target-epoch"):
        check_target_epoch(0, 1, 1, 0)


def test_budget_out_of_reach_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="below the number of attention modules \\(18\\).*K >= 18"):
        check_budget([6] * 18, total=10)
    with pytest.raises(ValueError, match="more than the model's 108 heads"):
        check_budget([6] * 18, total=109)
    with pytest.raises(ValueError, match="has only 2 heads; use at most 2"):
        check_budget([6, 2], per_module=3)
    with pytest.raises(ValueError, match="not both"):
        check_budget([6], total=3, per_module=2)
    check_budget([6] * 18, total=18)
    check_budget([6] * 18, total=108)


def test_precomputed_distance_gives_the_same_plan():
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(6 * 4, 8, generator=g) * 0.1 for _ in range(3))
    d = head_distance_matrix(q, k, v, 6)
    for theta in (0.0, 0.3, 0.45, 10.0):
        a = plan_redundant_heads(q, k, v, 6, theta)
        b = plan_redundant_heads(q, k, v, 6, theta, distance=d)
        assert a.rep == b.rep == plan_from_distance(d, theta).rep
    with pytest.raises(ValueError, match="shape"):
        plan_redundant_heads(q, k, v, 6, 0.3, distance=d[:5, :5])


@pytest.mark.parametrize("method", ["heuristic", "exact"])
@pytest.mark.parametrize("target", [4, 5, 9, 13, 17, 21, 24])
def test_exact_count_one_per_module_merges_only_into_kept_heads(method, target):
    ds = _dists()
    tp = plan_target_heads(ds, target, method)
    assert sum(tp.heads_per_module) == target
    assert min(tp.heads_per_module) >= 1
    for p in tp.plans:
        assert all(p.rep[r] == r for r in p.rep)  # every representative is kept
    # the threshold is the largest candidate whose dominating sets keep >= target
    cands = candidate_thetas(ds)
    assert tp.kept_by_threshold >= target and len(tp.merges) == tp.kept_by_threshold - target
    i = cands.index(tp.thetas[0])
    if i + 1 < len(cands) and method == "exact":  # exact: monotone, so the next candidate keeps fewer
        assert sum(len(p.keep) for p in plans_at(ds, cands[i + 1], method)) < target


def test_closest_first_merges_the_nearest_pair_and_moves_its_dependants():
    # module 0: heads 0,1 at distance 0.1, head 2 far; module 1: heads at 0.05 and 0.9
    d0 = torch.tensor([[0, .1, .8], [.1, 0, .7], [.8, .7, 0]], dtype=torch.float64)
    d1 = torch.tensor([[0, .05], [.05, 0]], dtype=torch.float64)
    plans = plans_at([d0, d1], NO_THETA, "heuristic")
    merges = complete_closest_first(plans, [d0, d1], 3)
    assert merges == [(1, 0, 1, 0.05), (0, 0, 1, 0.1)]  # closest first; the lower index goes
    assert plans[0].rep == [1, 1, 2] and plans[1].rep == [1, 1]
    # a head that represents others stays, the other one of the pair goes, dependants move along
    d = torch.tensor([[0, .2, .9, .3], [.2, 0, .9, .25], [.9, .9, 0, .9], [.3, .25, .9, 0]], dtype=torch.float64)
    p = plan_from_distance(d, 0.2)  # 0 and 1 similar: Algorithm 3 keeps the later one
    assert p.rep == [1, 1, 2, 3]
    # closest kept pair: 1-3 (0.25); 1 represents two heads, 3 one: 3 goes into 1
    assert complete_closest_first([p], [d], 2) == [(0, 3, 1, 0.25)]
    assert p.rep == [1, 1, 2, 1] and p.keep == [1, 2]


def test_per_module_targets_and_theta_per_module():
    ds = _dists(seed=1)
    tp = plan_target_heads(ds, 2, per_module=True)
    assert tp.heads_per_module == [2, 2, 2, 2] and len(tp.thetas) == 4
    with pytest.raises(ValueError, match="out of range"):
        plan_target_heads(ds, 7, per_module=True)


def test_choose_theta_evaluations_are_logarithmic():
    ds = _dists(counts=(6,) * 18, seed=2)
    n_cands = len(candidate_thetas(ds))
    theta, plans, evals = choose_theta(ds, 50)
    assert n_cands > 200 and evals <= 2 + n_cands.bit_length()
    assert sum(len(p.keep) for p in plans) >= 50


def test_apply_plan_equals_elim_redundant():
    g = torch.Generator().manual_seed(5)
    lins = [torch.nn.Linear(8, 24) for _ in range(3)] + [torch.nn.Linear(24, 8)]
    with torch.no_grad():
        for lin in lins:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.1)
    twins = [torch.nn.Linear(8, 24) for _ in range(3)] + [torch.nn.Linear(24, 8)]
    for a, b in zip(lins, twins):
        b.load_state_dict(a.state_dict())
    plan = elim_redundant_(*lins, 6, 0.35)
    assert plan.removed
    apply_redundancy_plan_(*twins, plan_redundant_heads(twins[0].weight, twins[1].weight, twins[2].weight, 6, 0.35))
    for a, b in zip(lins, twins):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


# ----------------------------------------------------------------------------- HF adapter

def test_hf_trainer_reaches_the_target_on_schedule(tmp_path):
    pytest.importorskip("transformers")
    from hf_helpers import tiny_bert
    from transformers import TrainingArguments

    from neuroprune_fairseq.hf import NeuroPruneArguments, NeuroPruneTrainer, head_counts
    from test_hf_trainer import _Data

    with pytest.raises(ValueError, match="not both"):
        NeuroPruneArguments(target_heads=3, target_heads_per_module=1)
    with pytest.raises(ValueError, match="prune_heads=True"):
        NeuroPruneArguments(target_heads=3, prune_heads=False)
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=4,
                             learning_rate=1e-3, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                             seed=0, lr_scheduler_type="constant")
    model = tiny_bert().train()  # 2 modules x 4 heads
    trainer = NeuroPruneTrainer(model=model, args=args, train_dataset=_Data(), neuroprune=NeuroPruneArguments(
        alpha=1e-4, beta=1e-4, target_heads=3, target_epoch=2))
    trainer.train()
    hist = trainer.np_callback.history
    assert [h["heads_kept"] for h in hist] == [3 + (5 * 1) // 2, 3, 3] == [5, 3, 3]
    assert [h["target"]["heads"] for h in hist] == [5, 3, 3]
    assert min(head_counts(model)) >= 1 and sum(head_counts(model)) == 3
    bad = NeuroPruneTrainer(model=tiny_bert(), args=args, train_dataset=_Data(),
                            neuroprune=NeuroPruneArguments(target_heads=1))
    with pytest.raises(ValueError, match="below the number of attention modules"):
        bad.train()
