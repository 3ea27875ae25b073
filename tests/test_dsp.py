"""DSP (Differentiable Subset Pruning): the torch-only math and the fairseq gate layer."""
import copy
import math
from argparse import Namespace
from types import SimpleNamespace

import pytest
import torch

from neuroprune_fairseq.core.dsp import (
    dsp_mask,
    dsp_temperature,
    gumbel_soft_topk,
    hard_topk_mask,
    keep_per_module,
    straight_through,
)

# ----------------------------------------------------------------------------- core math


def test_soft_topk_sums_to_k():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(108, generator=g)
    for k in (1, 10, 50, 100, 108):
        for t in (1.0, 0.1, 1e-3):
            m = gumbel_soft_topk(logits, k, t, noise=True, generator=g)
            assert abs(float(m.sum()) - k) < 1e-4 * k, (k, t, float(m.sum()))
            assert float(m.min()) >= 0
    # As in DSP's (and Xie & Ermon's) construction, an entry may exceed 1 when a step
    # selects it only partly (it is picked again later); with well-separated scores
    # (gap / t large) every entry stays in [0, 1].
    sep = torch.arange(108.0) * 0.5
    m = gumbel_soft_topk(sep, 50, 0.01, noise=False)
    assert float(m.max()) <= 1 + 1e-6 and abs(float(m.sum()) - 50) < 1e-4


def test_soft_topk_tends_to_hard_topk_as_t_goes_to_zero():
    logits = torch.linspace(-2.0, 2.0, 20)[torch.randperm(20, generator=torch.Generator().manual_seed(1))]
    hard = hard_topk_mask(logits, 7)
    errs = [float((gumbel_soft_topk(logits, 7, t, noise=False) - hard).abs().max()) for t in (1.0, 0.1, 0.01, 1e-4)]
    assert errs[0] > 0.1
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < 1e-6
    assert int(hard.sum()) == 7 and torch.equal(hard.nonzero().flatten(), torch.topk(logits, 7).indices.sort().values)


def test_temperature_schedule():
    t0, tf, T = 0.1, 1e-8, 15000
    assert math.isclose(dsp_temperature(0, t0, tf, T), t0, rel_tol=1e-12)
    assert math.isclose(dsp_temperature(T // 2, t0, tf, T), math.sqrt(t0 * tf), rel_tol=1e-9)
    assert dsp_temperature(T, t0, tf, T) == tf and dsp_temperature(10 * T, t0, tf, T) == tf
    ts = [dsp_temperature(s, t0, tf, 250) for s in range(0, 260, 10)]
    assert all(a > b for a, b in zip(ts[:25], ts[1:26]))


def test_straight_through_forward_is_hard_backward_is_soft():
    logits = torch.randn(12, generator=torch.Generator().manual_seed(2)).requires_grad_()
    soft = gumbel_soft_topk(logits, 4, 0.5, noise=False)
    st = straight_through(soft, hard_topk_mask(soft, 4))
    assert torch.equal(st.detach(), hard_topk_mask(logits, 4))
    w = torch.arange(12.0)
    (g_st,) = torch.autograd.grad((st * w).sum(), logits)
    (g_soft,) = torch.autograd.grad((gumbel_soft_topk(logits, 4, 0.5, noise=False) * w).sum(), logits)
    assert torch.allclose(g_st, g_soft) and float(g_st.abs().sum()) > 0


def test_eval_mask_is_hard_and_noise_free():
    logits = torch.randn(30)
    a = dsp_mask(logits, 9, 0.1, training=False)
    b = dsp_mask(logits, 9, 0.1, training=False)
    assert torch.equal(a, b) and torch.equal(a, hard_topk_mask(logits, 9))
    torch.manual_seed(0)
    c = dsp_mask(logits, 9, 0.1, training=True)
    d = dsp_mask(logits, 9, 0.1, training=True)
    assert not torch.equal(c, d)  # training samples noise
    assert keep_per_module(a, [10, 10, 10]) == [
        [h for h in range(10) if a[i * 10 + h] > 0] for i in range(3)
    ]


# ----------------------------------------------------------------------------- fairseq layer

fairseq = pytest.importorskip("fairseq")
from fairseq.data import Dictionary  # noqa: E402

import neuroprune_fairseq.plugin  # noqa: E402,F401
from neuroprune_fairseq.core.dsp import top_k_heads  # noqa: E402
from neuroprune_fairseq.fairseq_adapter.dsp_criterion import (  # noqa: E402
    DSPCriterion,
    build_gate_optimizer,
    step_with_gate_lr,
)
from neuroprune_fairseq.fairseq_adapter.head_gates import HeadGateHooks, finalize_heads_, head_importance  # noqa: E402
from neuroprune_fairseq.fairseq_adapter.sites import attention_modules, head_counts  # noqa: E402
from neuroprune_fairseq.fairseq_adapter.model import NeuroPruneTransformerModel, neuroprune_base_architecture  # noqa: E402


def tiny_model(seed=0, heads=6):
    torch.manual_seed(seed)
    d = Dictionary()
    for i in range(20):
        d.add_symbol(f"w{i}")
    args = Namespace(
        encoder_layers=2, decoder_layers=2, encoder_embed_dim=24, decoder_embed_dim=24,
        encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32, encoder_attention_heads=heads,
        decoder_attention_heads=heads, share_all_embeddings=True, dropout=0.0, attention_dropout=0.0,
        max_source_positions=64, max_target_positions=64,
    )
    neuroprune_base_architecture(args)
    task = SimpleNamespace(source_dictionary=d, target_dictionary=d, cfg=SimpleNamespace(dsp_mode="joint"))
    model = NeuroPruneTransformerModel.build_model(args, task)
    task.dsp_head_counts = head_counts(model)
    return model, task, d


def tiny_sample(d, bsz=3, src_len=7, tgt_len=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(d.nspecial, len(d), (bsz, src_len), generator=g)
    tgt = torch.randint(d.nspecial, len(d), (bsz, tgt_len), generator=g)
    prev = torch.cat([torch.full((bsz, 1), d.eos()), tgt[:, :-1]], dim=1)
    return {
        "net_input": {"src_tokens": src, "src_lengths": torch.full((bsz,), src_len), "prev_output_tokens": prev},
        "target": tgt, "ntokens": tgt.numel(), "nsentences": bsz,
    }


def criterion(task, k=10, **kw):
    return DSPCriterion(task, sentence_avg=False, label_smoothing=0.1, dsp_heads=k, head_counts=task.dsp_head_counts, **kw)


def test_gates_get_gradients_and_model_too():
    model, task, d = tiny_model()
    crit = criterion(task, k=10, dsp_init_std=0.5)
    model.train()
    loss, _, log = crit(model, tiny_sample(d))
    loss.backward()
    g = crit.dsp_logits.grad
    assert g is not None and g.shape == (36,) and torch.isfinite(g).all() and float(g.abs().sum()) > 0
    assert model.encoder.layers[0].self_attn.q_proj.weight.grad is not None
    assert abs(log["dsp_mask_sum"] - 10) < 1e-3 and log["dsp_t"] == pytest.approx(0.1)


def test_eval_is_deterministic_and_uses_hard_topk():
    model, task, d = tiny_model()
    crit = criterion(task, k=10, dsp_init_std=1.0)
    model.eval()
    s = tiny_sample(d)
    with torch.no_grad():
        l1 = crit(model, s)[0]
        l2 = crit(model, s)[0]
        hooks = crit.hooks_for(model)
        hooks.mask = hard_topk_mask(crit.dsp_logits, 10)
        lprobs = model.get_normalized_probs(model(**s["net_input"]), log_probs=True)
        hooks.mask = None
        lprobs_dense = model.get_normalized_probs(model(**s["net_input"]), log_probs=True)
    assert float(l1) == float(l2)
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    ref, _ = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), s["target"].view(-1), 0.1, ignore_index=d.pad())
    assert float(l1) == pytest.approx(float(ref), rel=1e-6)
    assert float((lprobs - lprobs_dense).abs().max()) > 1e-4  # the mask does change the output


def test_all_ones_mask_is_identity():
    model, _, d = tiny_model()
    model.eval()
    s = tiny_sample(d)
    with torch.no_grad():
        ref = model(**s["net_input"])[0]
        hooks = HeadGateHooks(model)
        hooks.mask = torch.ones(hooks.total)
        out = model(**s["net_input"])[0]
    assert float((out - ref).abs().max()) < 1e-5


@pytest.mark.parametrize("empty", ["zero", "keep-best"])
def test_finalised_model_equals_hard_masked_model(empty):
    model, task, d = tiny_model(seed=3)
    crit = criterion(task, k=9)
    with torch.no_grad():
        crit.dsp_logits.copy_(torch.randn(36))
        crit.dsp_logits[6:12] = -10.0  # module 1 (encoder layer 1 self-attention) loses every head
        for i in (0, 2, 3, 4, 5):  # every other module keeps at least one
            crit.dsp_logits[i * 6 + i] = 5.0 + i
    model.eval()
    s = tiny_sample(d)
    with torch.no_grad():
        hooks = crit.hooks_for(model)
        hooks.mask = hard_topk_mask(crit.dsp_logits, 9)
        masked = model(**s["net_input"])[0]
        hooks.mask = None
    final = copy.deepcopy(model)
    keep = top_k_heads(crit.dsp_logits, 9, head_counts(model))
    report = finalize_heads_(final, keep, scores=crit.dsp_logits, empty=empty)
    topk = set(torch.topk(crit.dsp_logits, 9).indices.tolist())
    flat_kept = {i * 6 + h for i, ks in enumerate(keep) for h in ks}
    assert flat_kept == topk and keep[1] == []
    assert report["empty_modules"] == ["encoder.layers.1.self_attn"]
    assert report["physical_heads_per_module"] == [max(len(k), 1) for k in keep]
    assert head_counts(final) == report["physical_heads_per_module"]
    assert sum(head_counts(final)) == 10
    mods = attention_modules(final)
    for (_, _, m), ks in zip(mods, keep):
        assert m.q_proj.weight.shape[0] == m.num_heads * m.head_dim
    with torch.no_grad():
        out = final(**s["net_input"])[0]
    diff = float((out - masked).abs().max())
    if empty == "zero":
        assert report["heads_kept"] == 9 and diff < 1e-5
    else:
        assert report["heads_kept"] == 10 and diff > 1e-5  # the kept best head is active
    # kept heads keep their weights: module 0's q rows equal the dense rows of its kept heads
    hd = mods[0][2].head_dim
    dense_q = model.encoder.layers[0].self_attn.q_proj.weight
    rows = torch.cat([dense_q[h * hd:(h + 1) * hd] for h in keep[0]])
    assert torch.equal(final.encoder.layers[0].self_attn.q_proj.weight, rows)


def test_michel_importance_is_zero_for_a_dead_head():
    model, _, d = tiny_model(seed=4)
    with torch.no_grad():
        model.decoder.layers[0].self_attn.out_proj.weight[:, 2 * 4:3 * 4] = 0  # head 2 of module 2 (hd = 4)
    model.eval()
    imp = head_importance(model, [tiny_sample(d, seed=i) for i in range(2)], d.pad(), normalize_by_layer=False)
    assert imp.shape == (36,) and bool((imp >= 0).all())
    assert float(imp[2 * 6 + 2]) == 0.0 and float(imp.sum()) > 0
    normed = head_importance(model, [tiny_sample(d)], d.pad(), normalize_by_layer=True)
    for part in torch.split(normed, [6] * 6):
        assert float(part.norm()) == pytest.approx(1.0, rel=1e-5)
    # the hooks are removed again: a second pass still sees 36 heads, and no mask remains
    assert all(len(m.out_proj._forward_pre_hooks) == 0 for _, _, m in attention_modules(model))


def test_gate_lr_step_equals_adam_at_the_gate_lr():
    """--dsp-lr: the gates move as under Adam at the constant gate lr, the other weights at
    the optimizer's (scheduled) lr."""

    class Wrapper:  # what step_with_gate_lr uses of a FairseqOptimizer
        def __init__(self, opt):
            self.optimizer = opt

        def step(self):
            self.optimizer.step()

    g = torch.Generator().manual_seed(5)
    gates, other = torch.nn.Parameter(torch.randn(8, generator=g)), torch.nn.Parameter(torch.randn(3, generator=g))
    ref_gates, ref_other = torch.nn.Parameter(gates.detach().clone()), torch.nn.Parameter(other.detach().clone())
    start = gates.detach().clone()
    opt = Wrapper(torch.optim.AdamW([gates, other], lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-4))
    gate_opt = build_gate_optimizer(gates, 0.2, opt.optimizer)
    ref_g = torch.optim.AdamW([ref_gates], lr=0.2, betas=(0.9, 0.98), weight_decay=1e-4)
    ref_o = torch.optim.AdamW([ref_other], lr=1e-3, betas=(0.9, 0.98), weight_decay=1e-4)
    for step in range(5):
        grad_g, grad_o = torch.randn(8, generator=g), torch.randn(3, generator=g)
        gates.grad, other.grad = grad_g.clone(), grad_o.clone()
        ref_gates.grad, ref_other.grad = grad_g.clone(), grad_o.clone()
        step_with_gate_lr(opt, gates, gate_opt)
        ref_g.step()
        ref_o.step()
    assert torch.equal(gates, ref_gates) and torch.equal(other, ref_other)
    assert float((gates.detach() - start).abs().max()) > 0.5  # 5 steps at 0.2, not at 1e-3
    assert opt.optimizer.state[gates] == {}  # fairseq's optimizer never stepped the gates


def test_overflowing_gate_gradient_skips_the_gate_step_only():
    from neuroprune_fairseq.fairseq_adapter.dsp_criterion import skip_nonfinite_gate_grad_

    gates = torch.nn.Parameter(torch.zeros(6))
    gates.grad = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert not skip_nonfinite_gate_grad_(gates) and gates.grad[4] == 3.0  # a normal gradient is kept
    gates.grad = torch.tensor([1e25, -2.0, 0.5, 0.0, 3.0, 1.0])  # finite, but its float32 norm is inf
    assert skip_nonfinite_gate_grad_(gates) and torch.equal(gates.grad, torch.zeros(6))
    gates.grad = torch.tensor([float("nan"), 1.0, 0.0, 0.0, 0.0, 0.0])
    assert skip_nonfinite_gate_grad_(gates) and torch.equal(gates.grad, torch.zeros(6))
