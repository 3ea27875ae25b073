"""pad_to_dense_: a pruned fairseq model back at its dense shapes, zeros in place of the removed
heads and MLP neurons, computing the same function (the "masked" model of the benchmark)."""
from argparse import Namespace
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fairseq")
from fairseq.data import Dictionary  # noqa: E402

import neuroprune_fairseq.plugin  # noqa: E402,F401
from neuroprune_fairseq.core import prune_linear_, remove_dead_neurons_  # noqa: E402
from neuroprune_fairseq.core.policy import prune_site_heads_  # noqa: E402
from neuroprune_fairseq.fairseq_adapter.model import NeuroPruneTransformerModel, neuroprune_base_architecture  # noqa: E402
from neuroprune_fairseq.fairseq_adapter.sites import attention_sites, head_counts, mlp_sites, pad_to_dense_  # noqa: E402


def build(width, ffn, heads=6, layers=2, seed=0):
    torch.manual_seed(seed)
    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")
    args = Namespace(
        encoder_layers=layers, decoder_layers=layers, encoder_embed_dim=width, decoder_embed_dim=width,
        encoder_ffn_embed_dim=ffn, decoder_ffn_embed_dim=ffn, encoder_attention_heads=heads,
        decoder_attention_heads=heads, share_all_embeddings=True, dropout=0.0, attention_dropout=0.0,
        max_source_positions=64, max_target_positions=64,
    )
    neuroprune_base_architecture(args)
    model = NeuroPruneTransformerModel.build_model(args, SimpleNamespace(source_dictionary=d, target_dictionary=d))
    return model.eval(), d


def batch(d, bsz=3, src_len=7, tgt_len=6):
    g = torch.Generator().manual_seed(1)
    src = torch.randint(d.nspecial, len(d), (bsz, src_len), generator=g)
    prev = torch.randint(d.nspecial, len(d), (bsz, tgt_len), generator=g)
    return {"src_tokens": src, "src_lengths": torch.full((bsz,), src_len), "prev_output_tokens": prev}


def test_pad_to_dense_keeps_shapes():
    model, _ = build(width=120, ffn=480, layers=1)
    enc = next(s for s in attention_sites(model) if s.name == "encoder.layers.0.self_attn")
    prune_site_heads_(enc, [0, 1])  # 2 of 6 heads of width 20: 40 rows
    dec = next(s for s in mlp_sites(model) if s.name == "decoder.layers.0")
    keep = torch.arange(100)
    prune_linear_(dec.fc1[0], 0, keep)
    prune_linear_(dec.fc2, 1, keep)
    assert pad_to_dense_(model) == {"attention_modules": 1, "mlp_blocks": 1, "structured_linears": 0}
    out = model.state_dict()
    assert out["encoder.layers.0.self_attn.q_proj.weight"].shape == (120, 120)
    assert out["encoder.layers.0.self_attn.q_proj.weight"][40:].abs().sum() == 0
    assert out["encoder.layers.0.self_attn.out_proj.weight"].shape == (120, 120)
    assert out["decoder.layers.0.fc1.weight"].shape == (480, 120) and out["decoder.layers.0.fc1.bias"][100:].sum() == 0
    assert out["decoder.layers.0.fc2.weight"].shape == (120, 480)


def test_pad_then_outputs_equal_the_pruned_models():
    model, d = build(width=24, ffn=32)
    dense_shapes = {k: v.shape for k, v in model.state_dict().items()}
    sites = attention_sites(model)
    for site, keep in zip(sites, ([1, 3], [0], [2, 4, 5], [5], [0, 1, 2, 3, 4], [3])):
        prune_site_heads_(site, keep)
    for i, s in enumerate(mlp_sites(model)):  # dead neurons: fc2 columns zeroed, then removed
        with torch.no_grad():
            s.fc2.weight[:, i::3] = 0
        remove_dead_neurons_(s.fc1[0], s.fc2, s.module.activation_fn)
    assert head_counts(model) == [2, 1, 3, 1, 5, 1]
    assert all(s.fc1[0].out_features < 32 for s in mlp_sites(model))
    x = batch(d)
    with torch.no_grad():
        pruned_out = model(**x)[0]

    padded = pad_to_dense_(model)
    assert padded == {"attention_modules": 6, "mlp_blocks": 4, "structured_linears": 0}
    assert head_counts(model) == [6] * 6
    assert {k: v.shape for k, v in model.state_dict().items()} == dense_shapes
    with torch.no_grad():
        padded_out = model(**x)[0]
    assert torch.allclose(padded_out, pruned_out, atol=1e-6)

    # what the benchmark does: the padded weights load into a freshly built dense model
    fresh, _ = build(width=24, ffn=32, seed=1)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert head_counts(fresh) == [6] * 6
    with torch.no_grad():
        assert torch.allclose(fresh(**x)[0], pruned_out, atol=1e-6)
