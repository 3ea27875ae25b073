import copy

import torch
from fairseq.modules import MultiheadAttention
from torch import nn

from neuroprune_fairseq.core import elim_redundant_, remove_dead_neurons_
from neuroprune_fairseq.fairseq_adapter.sites import head_counts, prune_redundant_heads_

HD, H, D = 4, 6, 24


def duplicate_heads_(mha, pairs):
    """Make head dst an exact copy of head src in q, k, v (weights and biases)."""
    with torch.no_grad():
        for src, dst in pairs:
            for lin in (mha.q_proj, mha.k_proj, mha.v_proj):
                lin.weight[dst * HD:(dst + 1) * HD] = lin.weight[src * HD:(src + 1) * HD]
                lin.bias[dst * HD:(dst + 1) * HD] = lin.bias[src * HD:(src + 1) * HD]


class Holder(nn.Module):
    def __init__(self, **kw):
        super().__init__()
        self.attn = MultiheadAttention(D, H, **kw)


def test_merging_duplicated_self_attention_heads_keeps_output():
    torch.manual_seed(0)
    m = Holder(self_attention=True).eval()
    duplicate_heads_(m.attn, [(0, 1), (3, 4)])
    x = torch.randn(7, 3, D)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, -2:] = True
    ref, _ = m.attn(x, x, x, key_padding_mask=pad)
    plans = prune_redundant_heads_(m, theta=0.0)
    assert head_counts(m) == [4]
    assert plans[0][1].keep == [1, 2, 4, 5]  # Algorithm 3 keeps the later twin
    out, _ = m.attn(x, x, x, key_padding_mask=pad)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-5)


def test_merging_duplicated_cross_attention_heads_keeps_output_incrementally():
    torch.manual_seed(1)
    m = Holder(kdim=D, vdim=D, encoder_decoder_attention=True).eval()
    duplicate_heads_(m.attn, [(2, 5), (2, 0)])
    dense = copy.deepcopy(m)
    prune_redundant_heads_(m, theta=0.0)
    assert head_counts(m) == [4]
    enc = torch.randn(9, 2, D)
    for model in (dense, m):
        state = {}
        outs = []
        for t in range(3):
            q = torch.randn(1, 2, D, generator=torch.Generator().manual_seed(t))
            o, _ = model.attn(q, enc, enc, incremental_state=state, static_kv=True)
            outs.append(o)
        model.outs = torch.cat(outs)
    assert torch.allclose(m.outs, dense.outs, atol=1e-5)


def test_surgery_keeps_training_kept_weights_with_sliced_adam_state():
    torch.manual_seed(2)
    m = Holder(self_attention=True)
    duplicate_heads_(m.attn, [(0, 1)])
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    x = torch.randn(5, 2, D)
    for _ in range(3):
        opt.zero_grad()
        m.attn(x, x, x)[0].pow(2).sum().backward()
        opt.step()
    # the steps broke the exact duplication of the weights: restore it
    duplicate_heads_(m.attn, [(0, 1)])
    q = m.attn.q_proj.weight
    old_avg = opt.state[q]["exp_avg"].clone()
    prune_redundant_heads_(m, theta=0.0, optimizer=opt)
    assert head_counts(m) == [5]
    assert m.attn.q_proj.weight is q  # same Parameter object: the optimizer still holds it
    assert opt.state[q]["exp_avg"].shape == q.shape == (5 * HD, D)
    assert torch.equal(opt.state[q]["exp_avg"][:HD], old_avg[HD:2 * HD])  # head 1's state kept
    before = q.detach().clone()
    opt.zero_grad()
    m.attn(x, x, x)[0].pow(2).sum().backward()
    opt.step()
    assert not torch.allclose(q.detach(), before), "kept weights must still be trained after pruning"
    assert m.attn.out_proj.weight.shape == (D, 5 * HD)


def test_elim_redundant_on_plain_linears_merges_out_columns():
    torch.manual_seed(3)
    q, k, v, o = (nn.Linear(6, 6) for _ in range(4))  # 3 heads of dim 2
    with torch.no_grad():
        for lin in (q, k, v):
            lin.weight[4:6] = lin.weight[0:2]
            lin.bias[4:6] = lin.bias[0:2]
    o_before = o.weight.detach().clone()
    plan = elim_redundant_(q, k, v, o, 3, theta=0.0)
    assert plan.keep == [1, 2] and plan.rep == [2, 1, 2]
    # head 0's out columns were added into head 2's, which now sits at position 1
    assert torch.allclose(o.weight[:, 2:4], o_before[:, 4:6] + o_before[:, 0:2])
    assert torch.allclose(o.weight[:, 0:2], o_before[:, 2:4])


def test_remove_dead_neurons_is_exact():
    torch.manual_seed(4)
    fc1, fc2 = nn.Linear(5, 8), nn.Linear(8, 5)
    with torch.no_grad():
        fc1.weight[2] = 0  # dead input: constant relu(b) folded into fc2's bias
        fc1.bias[2] = 0.7
        fc2.weight[:, 5] = 0  # never read
    x = torch.randn(4, 5)
    ref = fc2(torch.relu(fc1(x)))
    kept = remove_dead_neurons_(fc1, fc2, torch.relu)
    assert kept == [0, 1, 3, 4, 6, 7]
    assert fc1.weight.shape == (6, 5) and fc2.weight.shape == (5, 6)
    assert torch.allclose(fc2(torch.relu(fc1(x))), ref, atol=1e-6)


def test_fused_encoder_path_is_disabled_only_for_resized_layers():
    from neuroprune_fairseq.fairseq_adapter.sites import disable_fused_paths_

    class Layer(nn.Module):  # the attributes fairseq's BetterTransformer layers carry
        def __init__(self):
            super().__init__()
            self.self_attn = MultiheadAttention(D, H, self_attention=True)
            self.fc1, self.fc2 = nn.Linear(D, 48), nn.Linear(48, D)
            self.BT_version = True

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = Layer(), Layer()

    m = Model()
    duplicate_heads_(m.a.self_attn, [(0, 1)])
    prune_redundant_heads_(m, theta=0.0)
    disable_fused_paths_(m)
    assert head_counts(m) == [5, 6]
    assert m.a.BT_version is False and m.b.BT_version is True


def test_remove_dead_neurons_when_every_neuron_is_dead():
    fc1, fc2 = nn.Linear(3, 2), nn.Linear(2, 3)
    with torch.no_grad():
        fc1.weight.zero_()
        fc1.bias.copy_(torch.tensor([1.0, 2.0]))
    x = torch.randn(4, 3)
    ref = fc2(torch.relu(fc1(x)))
    assert remove_dead_neurons_(fc1, fc2, torch.relu) == [0]
    assert torch.allclose(fc2(torch.relu(fc1(x))), ref, atol=1e-6)
