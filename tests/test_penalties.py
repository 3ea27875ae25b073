import math

import torch

from neuroprune_fairseq.core import (
    attention_group_penalty,
    l1_penalty,
    mlp_preferential_attachment_penalty,
    preferential_attachment_l1,
)


def test_mlp_penalty_matches_hand_computation():
    # fc1 [d_e=2, d=3]; fc2 [d=3, d_e=2]; eps = 1e-4
    fc1 = torch.tensor([[0.0, 2.0, 0.00005], [1.0, -1.0, 3.0]])
    fc2 = torch.tensor([[0.0, 4.0], [0.5, -0.5], [0.0, 0.0]])
    # fc1 row 0: 2 of 3 entries below eps -> weight 2/3, |row| = 2.00005; row 1: weight 0
    # fc2 row 0: 1 of 2 below eps -> 1/2 * 4; row 1: 0; row 2: weight 1 * 0
    expected = (2 / 3) * 2.00005 + 0.5 * 4.0
    got = mlp_preferential_attachment_penalty(fc1, fc2, eps=1e-4)
    assert math.isclose(got.item(), expected, rel_tol=1e-6)
    assert math.isclose(preferential_attachment_l1(fc2, 1e-4).item(), 2.0, rel_tol=1e-6)


def test_mlp_penalty_row_weights_are_constants():
    fc1 = torch.tensor([[0.0, 2.0, -3.0]], requires_grad=True)
    fc2 = torch.tensor([[1.0], [0.0], [1.0]], requires_grad=True)
    mlp_preferential_attachment_penalty(fc1, fc2, 1e-4).backward()
    # d/dw of (1/3) * sum|w| is sign(w)/3 on row 0 of fc1; fc2 rows have 0 or 1 zero of 1
    assert torch.allclose(fc1.grad, torch.tensor([[0.0, 1 / 3, -1 / 3]]))
    assert torch.allclose(fc2.grad, torch.tensor([[0.0], [0.0], [0.0]]))


def test_dense_start_gives_zero_mlp_penalty():
    torch.manual_seed(0)
    fc1, fc2 = torch.randn(8, 4), torch.randn(4, 8)
    assert mlp_preferential_attachment_penalty(fc1, fc2, 1e-4).item() == 0.0


def test_attention_penalty_matches_hand_computation():
    # d_attn = 2, d = 3: groups are the 3 input columns of cat([q, k, v])
    q = torch.tensor([[1.0, 0.0, -2.0], [0.0, 0.0, 1.0]])
    k = torch.tensor([[0.5, 0.0, 0.0], [-0.5, 0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # column sums of |A|: 3.0, 0.0, 4.0
    expected = math.sqrt(3.0) + 0.0 + math.sqrt(4.0)
    assert math.isclose(attention_group_penalty(q, k, v).item(), expected, rel_tol=1e-6)


def test_attention_penalty_gradient_finite_when_group_is_zero():
    q = torch.tensor([[1.0, 0.0], [2.0, 0.0]], requires_grad=True)
    k = torch.tensor([[0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    v = torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    attention_group_penalty(q, k, v).backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
        assert (t.grad[:, 1] == 0).all()  # the all-zero group
    # column 0 sum = 5: d sqrt(s)/dw = sign(w) / (2 sqrt 5)
    assert math.isclose(q.grad[0, 0].item(), 1 / (2 * math.sqrt(5.0)), rel_tol=1e-6)
    assert k.grad[0, 0].item() == 0.0  # |w| has zero subgradient at w = 0


def test_l1_penalty():
    a, b = torch.tensor([[1.0, -2.0]]), torch.tensor([3.0, 0.0, -0.5])
    assert l1_penalty([a, b]).item() == 6.5
