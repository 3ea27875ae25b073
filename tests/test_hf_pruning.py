import pytest
import torch

pytest.importorskip("transformers")

from hf_helpers import duplicate_heads_, tiny_bert, tiny_opt, tiny_t5  # noqa: E402
from neuroprune_fairseq.core import (  # noqa: E402
    attention_group_penalty, l1_penalty, mlp_preferential_attachment_penalty)
from neuroprune_fairseq.core.penalties import preferential_attachment_l1  # noqa: E402
from neuroprune_fairseq.hf import (  # noqa: E402
    attention_sites, head_counts, heads_summary, mlp_sites, model_sparsity, neuroprune_penalties,
    prune_heads, prune_redundant_heads_)


def _bert_inputs():
    torch.manual_seed(1)
    ids = torch.randint(3, 60, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return dict(input_ids=ids, attention_mask=mask)


def _t5_inputs():
    torch.manual_seed(1)
    ids = torch.randint(2, 50, (2, 7))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    return dict(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.randint(2, 50, (2, 5)))


def _opt_inputs():
    torch.manual_seed(1)
    return dict(input_ids=torch.randint(3, 50, (2, 8)))


def test_roles_bert_t5_opt():
    bert, t5, opt = tiny_bert(), tiny_t5(), tiny_opt()
    assert [s.kind for s in attention_sites(bert)] == ["encoder"] * 2
    assert [s.name for s in attention_sites(bert)][0] == "bert.encoder.layer.0.attention"
    kinds = [s.kind for s in attention_sites(t5)]
    assert kinds.count("encoder") == 2 and kinds.count("decoder") == 2 and kinds.count("cross") == 2
    assert [s.kind for s in mlp_sites(t5)] == ["encoder", "encoder", "decoder", "decoder"]
    assert [s.kind for s in attention_sites(opt)] == ["decoder"] * 2
    assert all(s.num_heads == 4 and s.head_dim == 4 for m in (bert, t5, opt) for s in attention_sites(m))
    assert len(mlp_sites(tiny_t5(ff="gated-gelu"))[0].fc1) == 2


@pytest.mark.parametrize("make", [tiny_bert, tiny_t5, tiny_opt, lambda: tiny_t5(ff="gated-gelu")])
def test_penalties_equal_core(make):
    model = make()
    r_attn, r_mlp = neuroprune_penalties(model, eps=0.05)
    exp_attn = sum(float(attention_group_penalty(s.q.weight, s.k.weight, s.v.weight)) for s in attention_sites(model))
    exp_mlp = 0.0
    for s in mlp_sites(model):
        exp_mlp += float(mlp_preferential_attachment_penalty(s.fc1[0].weight, s.fc2.weight, 0.05))
        exp_mlp += sum(float(preferential_attachment_l1(f.weight, 0.05)) for f in s.fc1[1:])
    assert float(r_attn) == pytest.approx(exp_attn, rel=1e-6)
    assert float(r_mlp) == pytest.approx(exp_mlp, rel=1e-6)
    assert exp_mlp > 0  # with eps=0.05 some tiny weights count
    l1_attn, l1_mlp = neuroprune_penalties(model, penalty="l1")
    assert float(l1_attn) == pytest.approx(float(l1_penalty(
        w for s in attention_sites(model) for w in (s.q.weight, s.k.weight, s.v.weight))), rel=1e-6)
    assert float(l1_mlp) == pytest.approx(float(l1_penalty(
        w for s in mlp_sites(model) for w in [f.weight for f in s.fc1] + [s.fc2.weight])), rel=1e-6)
    # gradients flow into the attention weights
    r_attn.backward()
    assert attention_sites(model)[0].q.weight.grad.abs().sum() > 0


def test_bert_duplicate_heads_pruned_outputs_equal():
    model = tiny_bert()
    sites = attention_sites(model)
    duplicate_heads_(sites[0], [(0, 2), (1, 3)])
    duplicate_heads_(sites[1], [(1, 2)])
    x = _bert_inputs()
    with torch.no_grad():
        ref = model(**x).logits
    dense_count = model_sparsity(model).dense
    results = prune_redundant_heads_(model, theta=1e-6)
    assert [len(r.plan.keep) for r in results] == [2, 3]
    assert results[0].kept_original == [2, 3] and results[1].kept_original == [0, 2, 3]
    assert head_counts(model) == [2, 3]
    sa = model.bert.encoder.layer[0].attention.self
    assert sa.num_attention_heads == 2 and sa.all_head_size == 8 and sa.query.weight.shape == (8, 16)
    with torch.no_grad():
        out = model(**x).logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    sp = model_sparsity(model)
    assert sp.dense == dense_count and sp.removed == 3 * 4 * (3 * 16 + 16)
    assert heads_summary(model) == (5, 8)
    # a second pass finds nothing more; min distance is reported
    again = prune_redundant_heads_(model, theta=1e-6)
    assert all(not r.plan.removed and r.plan.min_distance > 1e-6 for r in again)


def test_t5_duplicate_heads_pruned_outputs_equal():
    model = tiny_t5()
    enc_bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    dec_bias = model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias
    sites = attention_sites(model)
    for s in sites:
        if s.kind == "encoder":
            duplicate_heads_(s, [(0, 3)], [enc_bias])
        elif s.kind == "decoder":
            duplicate_heads_(s, [(1, 2)], [dec_bias])
    duplicate_heads_(sites[-1], [(0, 1), (0, 2)])  # last cross-attention: 3 copies
    x = _t5_inputs()
    with torch.no_grad():
        ref = model(**x).logits
    results = prune_redundant_heads_(model, theta=1e-6)
    assert [len(r.plan.keep) for r in results] == [3, 3, 3, 4, 3, 2]
    with torch.no_grad():
        out = model(**x).logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    first = model.encoder.block[0].layer[0].SelfAttention
    assert first.n_heads == 3 and first.inner_dim == 12 and first.relative_attention_bias.weight.shape[1] == 4
    # generation with the KV cache works on the pruned model
    gen = model.generate(x["input_ids"], attention_mask=x["attention_mask"], max_new_tokens=4, do_sample=False)
    assert gen.shape[0] == 2


def test_opt_duplicate_heads_pruned_outputs_equal():
    model = tiny_opt()
    sites = attention_sites(model)
    duplicate_heads_(sites[0], [(3, 0)])
    duplicate_heads_(sites[1], [(0, 1), (2, 3)])
    x = _opt_inputs()
    with torch.no_grad():
        ref = model(**x).logits
    results = prune_redundant_heads_(model, theta=1e-6)
    assert [len(r.plan.keep) for r in results] == [3, 2]
    attn = model.model.decoder.layers[1].self_attn
    assert attn.num_heads == 2 and attn.embed_dim == 8
    with torch.no_grad():
        out = model(**x).logits
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    gen = model.generate(x["input_ids"], max_new_tokens=3, do_sample=False)
    assert gen.shape == (2, 11)


def test_prune_heads_without_merge_matches_zeroed_out_columns():
    """prune_heads (no merge) == the dense model with the removed heads' out columns zeroed."""
    model = tiny_bert()
    ref_model = tiny_bert()
    s = attention_sites(ref_model)[1]
    with torch.no_grad():
        s.out.weight[:, 0:4] = 0
        s.out.weight[:, 8:12] = 0
    prune_heads(model, {"bert.encoder.layer.1.attention": [1, 3]})
    x = _bert_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, ref_model(**x).logits, atol=1e-5, rtol=0)
    assert attention_sites(model)[1].kept_heads == [1, 3]
    prune_heads(model, {"bert.encoder.layer.1.attention": [1]})  # current index 1 = original head 3
    assert attention_sites(model)[1].kept_heads == [3]


def test_optimizer_state_sliced():
    model = tiny_bert()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    x = _bert_inputs()
    loss = model(**x, labels=torch.tensor([0, 1, 1])).loss
    loss.backward()
    opt.step()
    s = attention_sites(model)[0]
    q_id = id(s.q.weight)
    exp_avg = opt.state[s.q.weight]["exp_avg"].clone()
    duplicate_heads_(s, [(0, 1)])
    prune_redundant_heads_(model, theta=1e-6, optimizer=opt)
    assert id(s.q.weight) == q_id and s.q.weight.shape == (12, 16)
    torch.testing.assert_close(opt.state[s.q.weight]["exp_avg"], exp_avg[4:])


def test_imports_are_lazy():
    import subprocess
    import sys

    code = ("import sys, neuroprune_fairseq; assert 'neuroprune_fairseq.hf' not in sys.modules; "
            "from neuroprune_fairseq.hf import attention_sites, neuroprune_penalties; "
            "assert 'transformers' not in sys.modules, 'roles/pruning must not import transformers'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900,
                       cwd=__import__("os").path.dirname(__import__("os").path.dirname(__file__)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
