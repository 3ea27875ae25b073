"""Structure the penalties zero is removed physically (gathers / scatters) with outputs equal,
counted by hand (FLOPs, structure report), and reloaded from a state dict (issue 20, items 2-3)."""
import pytest
import torch

pytest.importorskip("fairseq")

from neuroprune_fairseq.commands.finalize import flops_per_token, remove_dead_mlp_neurons_, remove_zeroed_structure_  # noqa: E402
from neuroprune_fairseq.core.policy import structure  # noqa: E402
from neuroprune_fairseq.core.structure import block_nm_share  # noqa: E402
from neuroprune_fairseq.core.structured_linear import StructuredLinear, structure_linear_  # noqa: E402
from neuroprune_fairseq.fairseq_adapter.sites import attention_sites, mlp_sites, model_sparsity  # noqa: E402
from test_pad_to_dense import batch, build  # noqa: E402

W, FFN = 24, 32


def zero_structure_(model):
    """Hand-made structure: input groups 0..4 of the encoder self-attention of layer 0, groups
    3 and 7 of the decoder cross-attention of layer 1 (q reads the decoder, k/v the encoder), group
    10 of decoder self-attention 0; fc2 rows 2, 5 of encoder layer 1; fc1 inputs 1, 2 of decoder
    layer 0; out-projection rows 4..6 of decoder self-attention 1."""
    s = {x.name: x for x in attention_sites(model)}
    m = {x.name: x for x in mlp_sites(model)}
    with torch.no_grad():
        for lin in (s["encoder.layers.0.self_attn"].q, s["encoder.layers.0.self_attn"].k, s["encoder.layers.0.self_attn"].v):
            lin.weight[:, :5] = 0
        for lin in (s["decoder.layers.1.encoder_attn"].q, s["decoder.layers.1.encoder_attn"].k, s["decoder.layers.1.encoder_attn"].v):
            lin.weight[:, [3, 7]] = 0
        for lin in (s["decoder.layers.0.self_attn"].q, s["decoder.layers.0.self_attn"].k, s["decoder.layers.0.self_attn"].v):
            lin.weight[:, 10] = 0
        m["encoder.layers.1"].fc2.weight[[2, 5]] = 0
        m["decoder.layers.0"].fc1[0].weight[:, [1, 2]] = 0
        s["decoder.layers.1.self_attn"].out.weight[4:7] = 0


def forward(model, b):
    with torch.no_grad():
        return model(**b)[0]


def test_structured_linear_is_exact_and_counts():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 6)
    with torch.no_grad():
        lin.weight[:, [0, 5]] = 0
        lin.weight[[1, 4]] = 0
    x = torch.randn(3, 5, 8)
    ref = lin(x)
    assert structure_linear_(lin) == {"inputs": 2, "outputs": 2}
    assert isinstance(lin, StructuredLinear) and lin.weight.shape == (4, 6)
    assert lin.np_in_index.tolist() == [1, 2, 3, 4, 6, 7] and lin.np_out_index.tolist() == [0, 2, 3, 5]
    assert lin.full_in == 8 and lin.full_out == 6
    torch.testing.assert_close(lin(x), ref, rtol=0, atol=1e-6)
    # the dead outputs are their biases
    torch.testing.assert_close(lin(x)[..., 1], lin.np_out_bias[1].expand(3, 5))


def test_finalize_removes_groups_and_rows_with_outputs_equal_and_hand_counted_flops():
    model, d = build(width=W, ffn=FFN, heads=6, layers=2)
    zero_structure_(model)
    b = batch(d)
    ref = forward(model, b)
    dense_flops = flops_per_token(model, 20)["body"]
    before = structure(attention_sites(model), mlp_sites(model))
    assert before["input_groups_zeroed"] == 5 + 2 + 1 and before["input_groups"] == 6 * W
    assert before["fc2_rows_zero"] == 2 and before["mlp_neurons_dead"] == 0
    remove_dead_mlp_neurons_(model)
    removed = remove_zeroed_structure_(model)
    # inputs: 3 x 5 + 3 x 2 + 3 x 1 (q, k, v of three modules) + 2 (fc1); outputs: 2 (fc2) + 3 (out_proj)
    assert removed == {"inputs": 15 + 6 + 3 + 2, "outputs": 5}
    torch.testing.assert_close(forward(model, b), ref, rtol=0, atol=1e-5)
    # FLOPs by hand: every removed column of q/k/v/fc1 saves its rows x 2, every removed row its columns x 2
    saved = 2 * (W * (15 + 6 + 3) + FFN * 2 + FFN * 2 + W * 3)
    assert flops_per_token(model, 20)["body"] == dense_flops - saved
    after = structure(attention_sites(model), mlp_sites(model))
    for key in ("input_groups_zeroed", "fc2_rows_zero", "mlp_neurons_dead"):
        assert after[key] == before[key]
    rep = model_sparsity(model)
    assert rep.dense - rep.present == W * 6 * (15 + 6 + 3) // 6 + FFN * 2 + FFN * 2 + W * 3
    # every zero made here is in a removed structure
    assert after["structured_share"] == pytest.approx(100.0) and before["structured_share"] == pytest.approx(100.0)


def test_structured_state_dict_loads_into_a_dense_built_model():
    model, d = build(width=W, ffn=FFN, heads=6, layers=2)
    zero_structure_(model)
    remove_dead_mlp_neurons_(model)
    remove_zeroed_structure_(model)
    b = batch(d)
    ref = forward(model, b)
    fresh, _ = build(width=W, ffn=FFN, heads=6, layers=2, seed=5)
    fresh.load_state_dict(model.state_dict(), strict=True)
    fresh.eval()
    torch.testing.assert_close(forward(fresh, b), ref, rtol=0, atol=1e-6)
    q = dict((s.name, s) for s in attention_sites(fresh))["encoder.layers.0.self_attn"].q
    assert isinstance(q, StructuredLinear) and q.weight.shape == (W, W - 5) and q.full_in == W


def test_block_nm_share_by_hand():
    w = torch.tensor([[1., 0, 0, 2, 3, 4, 5, 0, 9],  # blocks: 2 nz (ok), 3 nz (not); the 9 is a partial block
                      [0., 0, 0, 0, 1, 1, 1, 1, 1]])  # 0 nz (ok), 4 nz (not)
    assert block_nm_share([w]) == pytest.approx(50.0)
    assert block_nm_share([w], m=4, n=3) == pytest.approx(75.0)
    assert block_nm_share([torch.zeros(3, 8)]) == pytest.approx(100.0)


def test_incremental_decoding_of_a_structured_model_matches_the_full_pass():
    """fairseq-generate decodes step by step (incremental state, static cross-attention keys):
    the gathers and scatters give the same as the unfinalised model there too."""
    model, d = build(width=W, ffn=FFN, heads=6, layers=2)
    zero_structure_(model)
    b = batch(d)

    def steps(m):
        enc = m.encoder(b["src_tokens"], src_lengths=b["src_lengths"])
        state, outs = {}, []
        with torch.no_grad():
            for t in range(1, b["prev_output_tokens"].shape[1] + 1):
                y, _ = m.decoder(b["prev_output_tokens"][:, :t], encoder_out=enc, incremental_state=state)
                outs.append(y[:, -1])
        return torch.stack(outs, 1)

    ref = steps(model)
    remove_dead_mlp_neurons_(model)
    remove_zeroed_structure_(model)
    torch.testing.assert_close(steps(model), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(forward(model, b), ref, rtol=0, atol=1e-5)


def test_pad_to_dense_undoes_the_structure_with_outputs_equal():
    """The "masked" model of the speed benchmark: every layer back at its dense shape (zeros in
    place of what was removed), the same function."""
    from neuroprune_fairseq.fairseq_adapter.sites import pad_to_dense_

    model, d = build(width=W, ffn=FFN, heads=6, layers=2)
    zero_structure_(model)
    b = batch(d)
    ref = forward(model, b)
    remove_dead_mlp_neurons_(model)
    remove_zeroed_structure_(model)
    dense_flops = flops_per_token(build(width=W, ffn=FFN, heads=6, layers=2)[0], 20)["body"]
    assert pad_to_dense_(model)["structured_linears"] == 3 * 3 + 1 + 1 + 1
    assert not any(isinstance(m, StructuredLinear) for m in model.modules())
    assert flops_per_token(model, 20)["body"] == dense_flops
    torch.testing.assert_close(forward(model, b), ref, rtol=0, atol=1e-5)
