"""The proximal maps (core/proximal.py) against closed forms and brute-force 1-D minimisation,
and the target-sparsity schedule / enforcement (core/target.py)."""
import math

import pytest
import torch

from neuroprune_fairseq.core.penalties import attention_group_penalty, pa_row_weight
from neuroprune_fairseq.core.proximal import (
    attention_group_prox, preferential_attachment_prox, soft_threshold, sqrt_l1_group_prox,
    sqrt_l1_group_prox_sorted, weighted_row_soft_threshold)
from neuroprune_fairseq.core.target import (
    Pool, SparsifyRoles, check_target_options, cubic_target, enforce_pool_, mlp_scores, sparsify_step_)

D = torch.float64


def grid_argmin_1d(f, lo, hi, n=400001):
    xs = torch.linspace(lo, hi, n, dtype=D)
    v = f(xs)
    i = int(v.argmin())
    return float(xs[i]), float(v[i])


def test_soft_threshold_closed_form_and_brute_force():
    torch.manual_seed(0)
    w = torch.randn(50, dtype=D)
    lam = 0.3
    x = soft_threshold(w, lam)
    expected = torch.sign(w) * torch.clamp(w.abs() - lam, min=0)
    assert torch.equal(x, expected)
    assert torch.equal(x == 0, w.abs() <= lam)  # exact zeros exactly where |w| <= lam
    for wi, xi in zip(w[:8].tolist(), x[:8].tolist()):
        xb, _ = grid_argmin_1d(lambda t: 0.5 * (t - wi) ** 2 + lam * t.abs(), -4, 4)
        assert xi == pytest.approx(xb, abs=1e-4)


def test_weighted_row_soft_threshold_and_eq1_prox():
    torch.manual_seed(1)
    w = torch.randn(4, 6, dtype=D)
    w[1, :3] = 0.0  # row 1: 3 of 6 entries below eps -> row weight 1/2
    w[2, :5] = 1e-6  # row 2: 5 of 6 -> 5/6
    r = pa_row_weight(w, 1e-4)
    assert r.tolist() == [0.0, 0.5, 5 / 6, 0.0]
    lam = 0.8
    x = preferential_attachment_prox(w, lam, 1e-4)
    assert torch.equal(x, weighted_row_soft_threshold(w, lam, r))
    assert torch.equal(x[0], w[0]) and torch.equal(x[3], w[3])  # no small entry: left as it is
    for i in (1, 2):  # brute force per entry: 0.5 (t - w)^2 + lam r_i |t|
        for j in range(6):
            xb, _ = grid_argmin_1d(lambda t: 0.5 * (t - w[i, j]) ** 2 + lam * r[i] * t.abs(), -4, 4)
            assert float(x[i, j]) == pytest.approx(xb, abs=1e-4)
    assert int((x[2] == 0).sum()) >= 5  # the sparsest row is shrunk hardest


def _objective(x, w, lam):
    return 0.5 * float(((x - w) ** 2).sum()) + lam * math.sqrt(float(x.abs().sum()))


def _brute_group(w, lam, n=200001):
    """min over tau of 0.5 sum min(|w|, tau)^2 + lam sqrt(S(tau)) (every minimiser is soft(w, tau) or 0)."""
    a = w.abs().to(D)
    taus = torch.linspace(0, float(a.max()), n, dtype=D)
    h = 0.5 * torch.minimum(a[None], taus[:, None]).pow(2).sum(1) + lam * torch.clamp(a[None] - taus[:, None], min=0).sum(1).sqrt()
    return float(h.min())


def test_group_prox_matches_brute_force_minimum():
    torch.manual_seed(2)
    for trial in range(200):
        n = int(torch.randint(1, 9, (1,)))
        w = torch.randn(n, dtype=D) * float(torch.rand(1)) * 3
        if trial % 4 == 0:
            w[0] *= 10  # one dominant entry: two local minima in the 1-D problem
        lam = 3 * float(torch.rand(1)) ** 3
        for f in (sqrt_l1_group_prox, sqrt_l1_group_prox_sorted):
            x = f(w[None], lam)[0]
            assert not torch.isnan(x).any()
            # not worse than the best point of a fine 1-D grid (and not better by more than the grid step allows)
            assert _objective(x, w, lam) <= _brute_group(w, lam) + 1e-9
            assert _objective(x, w, lam) >= _brute_group(w, lam) - 1e-4


def test_group_prox_single_entry_closed_form():
    # n = 1: prox of lam sqrt(|x|) at w > 0 is 0 iff 0.5 w^2 <= min_t 0.5 (t - w)^2 + lam sqrt(t)
    for w0, lam in [(1.0, 0.1), (1.0, 0.5), (1.0, 0.8), (2.0, 3.0), (0.3, 0.05)]:
        x = float(sqrt_l1_group_prox(torch.tensor([[w0]], dtype=D), lam)[0, 0])
        xb, fb = grid_argmin_1d(lambda t: 0.5 * (t - w0) ** 2 + lam * t.abs().sqrt(), -1, 2 * w0)
        assert x == pytest.approx(xb, abs=1e-4)
        assert (x == 0.0) == (xb == 0.0 or abs(xb) < 1e-4)


def test_group_prox_zero_group_lam_zero_and_exact_zeros():
    x = torch.zeros(3, 5)
    x[1] = torch.tensor([0.5, -0.2, 0.0, 0.1, 0.3])
    out = sqrt_l1_group_prox(x, 0.2)
    assert not torch.isnan(out).any() and torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert torch.equal(sqrt_l1_group_prox(x, 0.0), x)
    # the soft-threshold level solves tau = lam / (2 sqrt(||soft||_1)); entries below it are exactly 0
    tau = float(x[1, 0] - out[1, 0])
    assert tau == pytest.approx(0.2 / (2 * math.sqrt(float(out[1].abs().sum()))), rel=1e-5)
    assert torch.equal(out[1] == 0, x[1].abs() <= tau)
    assert torch.equal(sqrt_l1_group_prox(x, 10.0), torch.zeros_like(x))  # strong enough: the whole group


def test_fast_and_sorted_group_prox_agree_on_a_weight_matrix():
    torch.manual_seed(3)
    x = torch.randn(300, 90) * 0.1
    x[:20] *= 0.01  # weak groups: these fail the fast path's certificate at larger lam
    for lam in (1e-7, 1e-4, 1e-2, 0.1, 1.0):
        fast, exact = sqrt_l1_group_prox(x, lam), sqrt_l1_group_prox_sorted(x, lam)
        assert torch.allclose(fast, exact, atol=1e-6, rtol=0)
        assert torch.equal(fast == 0, exact == 0)


def test_attention_group_prox_zeroes_whole_input_groups():
    torch.manual_seed(4)
    q, k, v = (torch.randn(8, 5, dtype=D) for _ in range(3))
    for m in (q, k, v):
        m[:, 2] *= 1e-3  # input dimension 2 is weak in Q, K and V
    nq, nk, nv = attention_group_prox(q, k, v, 0.05)
    a = torch.cat([nq, nk, nv], 0)
    assert a.shape == (24, 5) and torch.equal(a[:, 2], torch.zeros(24, dtype=D))
    assert (a[:, [0, 1, 3, 4]] != 0).float().mean() > 0.9
    expected = sqrt_l1_group_prox(torch.cat([q, k, v], 0).t(), 0.05).t()
    assert torch.equal(a, expected)
    assert float(attention_group_penalty(nq, nk, nv)) < float(attention_group_penalty(q, k, v))


def test_cubic_schedule():
    assert cubic_target(0, 100, 80.0) == 0.0
    assert cubic_target(75, 100, 80.0) == pytest.approx(80.0)
    assert cubic_target(100, 100, 80.0) == pytest.approx(80.0)
    assert cubic_target(30, 100, 80.0, start=0.2, end=0.6) == pytest.approx(80.0 * (1 - 0.75 ** 3))
    vals = [cubic_target(t, 100, 50.0) for t in range(101)]
    assert vals == sorted(vals)
    with pytest.raises(ValueError, match="0 <= S < 100"):
        check_target_options(100.0, 0.0, 0.75)
    with pytest.raises(ValueError, match="start < end"):
        check_target_options(50.0, 0.5, 0.5)


def test_enforce_pool_zeroes_the_lowest_scores_and_keeps_zeros():
    w = torch.tensor([[0.0, 0.5, -0.1, 0.3], [0.2, 0.0, -0.9, 0.05]], dtype=D)
    pool = Pool([w], lambda: [w.abs()])
    n = enforce_pool_(pool, 50.0)  # 8 weights, 2 zero already: 2 more
    assert n == 2
    assert w.tolist() == [[0.0, 0.5, 0.0, 0.3], [0.2, 0.0, -0.9, 0.0]]
    assert enforce_pool_(pool, 50.0) == 0


def test_mlp_scores_rank_sparse_rows_first():
    w = torch.tensor([[0.0, 0.0, 0.0, 0.4], [0.3, 0.2, 0.5, 0.4]])
    s = mlp_scores(w, "neuroprune", 1e-4)
    assert float(s[0, 3]) < float(s[1, 1])  # 0.4 in a row with 3 zeros goes before 0.2 in a dense row
    assert torch.equal(mlp_scores(w, "l1", 1e-4), w.abs())


def test_removed_weights_count_towards_the_target():
    # dense model of 20 weights, 10 removed (pruned heads): 60% overall needs 2 zeros of the 10 left
    w = torch.arange(1.0, 11.0).reshape(2, 5)
    roles = SparsifyRoles(attn=[], mlp=[], counted=[w], dense=20, penalty="l1")
    sparsify_step_(roles, 0.0, 0.0, proximal=False, target=60.0)
    assert int((w == 0).sum()) == 2 and w[0, 0] == 0 and w[0, 1] == 0


def test_kth_smallest_is_exact_on_large_inputs():
    from neuroprune_fairseq.core.target import kth_smallest

    torch.manual_seed(5)
    v = torch.cat([torch.randn(400000), torch.full((100000,), float("-inf")), torch.zeros(50000)])
    v = v[torch.randperm(v.numel())]
    for k in (1, 100000, 100001, 123456, 300000, 549999, 550000):
        assert float(kth_smallest(v, k)) == float(v.kthvalue(k).values)
