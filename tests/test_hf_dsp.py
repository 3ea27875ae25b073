"""DSP joint and Michel et al. on HF models (tiny BERT, tiny OPT), through hooks."""
import pytest
import torch

pytest.importorskip("transformers")

from hf_helpers import TinyClassificationData, tiny_bert, tiny_opt, tiny_trainer_args  # noqa: E402
from neuroprune_fairseq.core.dsp import hard_topk_mask  # noqa: E402
from neuroprune_fairseq.hf import attention_sites, head_counts, load_pruned, save_pruned  # noqa: E402
from neuroprune_fairseq.hf.dsp import (  # noqa: E402
    attach_head_gates, dsp_joint_train_, dsp_topk_, michel_importance, prune_to_top_k_)


def bert_batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [dict(input_ids=torch.randint(3, 60, (4, 7), generator=g), attention_mask=torch.ones(4, 7, dtype=torch.long),
                 labels=torch.randint(0, 2, (4,), generator=g)) for _ in range(n)]


def opt_batches(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, 50, (4, 7), generator=g)
        out.append(dict(input_ids=ids, labels=ids.clone()))
    return out


CASES = [(tiny_bert, bert_batches), (tiny_opt, opt_batches)]


def _eval_inputs(batches):
    b = dict(batches[0])
    b.pop("labels")
    return b


@pytest.mark.parametrize("make,data", CASES)
def test_joint_trains_gates_and_weights_then_exact_topk_and_roundtrip(tmp_path, make, data):
    torch.manual_seed(0)
    model = make()
    batches = data()
    gates = attach_head_gates(model)
    assert gates.counts == [4, 4] and gates.total == 8
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    l0 = gates.logits.detach().clone()
    k = 5
    info = dsp_joint_train_(model, gates, k, lambda: batches, epochs=3, lr=1e-3, gate_lr=0.2)
    assert info["steps"] == 12
    assert not torch.equal(gates.logits.detach(), l0)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), w0[n])]
    assert any(".query." in n or "q_proj" in n for n in changed) and len(changed) > len(w0) // 2
    # the hard-masked (eval) model = the physically pruned one
    x = _eval_inputs(batches)
    gates.mask = hard_topk_mask(gates.logits.detach(), k)
    with torch.no_grad():
        masked = model(**x).logits
    report = dsp_topk_(model, gates, k)
    assert not gates.hooks
    counted = sum(s.q.weight.shape[0] // s.head_dim for s in attention_sites(model))
    assert report["heads_kept"] == k and counted == k and sum(head_counts(model)) == k
    assert sum(s.out.weight.shape[1] for s in attention_sites(model)) == k * attention_sites(model)[0].head_dim
    with torch.no_grad():
        pruned = model(**x).logits
    assert torch.allclose(masked, pruned, atol=1e-5)
    save_pruned(model, str(tmp_path))
    loaded = load_pruned(str(tmp_path))
    assert head_counts(loaded) == head_counts(model)
    with torch.no_grad():
        assert torch.allclose(loaded(**x).logits, pruned, atol=1e-6)


def test_topk_empty_module_keeps_zeroed_placeholder():
    model = tiny_bert()
    x = _eval_inputs(bert_batches())
    scores = torch.tensor([5., 6., 7., 8., 0., 0., 0., 0.])
    gates = attach_head_gates(model)
    gates.mask = hard_topk_mask(scores, 3)
    with torch.no_grad():
        masked = model(**x).logits
    gates.remove()
    report = prune_to_top_k_(model, scores, 3)
    assert report["heads_per_module"] == [3, 0] and report["heads_kept"] == 3
    assert report["empty_modules"] == [attention_sites(model)[1].name]
    assert head_counts(model) == [3, 1]
    assert report["kept_heads"][attention_sites(model)[0].name] == [1, 2, 3]
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, masked, atol=1e-6)


@pytest.mark.parametrize("k", [0, 9, -1, 2.5])
def test_bad_k_names_the_range(k):
    model = tiny_bert()
    with pytest.raises(ValueError, match=r"integer in \[1, 8\]"):
        prune_to_top_k_(model, torch.zeros(8), k)
    gates = attach_head_gates(model)
    with pytest.raises(ValueError, match=r"integer in \[1, 8\]"):
        dsp_joint_train_(model, gates, k, lambda: bert_batches(1))


@pytest.mark.parametrize("make,data", CASES)
def test_michel_importance_matches_explicit_gate(make, data):
    model = make()
    batches = data(n=2)
    imp = michel_importance(model, batches, normalize_by_layer=False)
    sites = attention_sites(model)
    assert list(imp) == [s.name for s in sites] and all(v.shape == (4,) for v in imp.values())
    # by hand: an explicit scalar gate on head h's value rows (P (g V) = g P V), via autograd
    site, h, hd = sites[1], 2, sites[1].head_dim
    expected = 0.0
    for batch in batches:
        g = torch.ones((), requires_grad=True)

        def scale(mod, inp, out):
            m = torch.ones(out.shape[-1])
            m = torch.cat([m[:h * hd], g * m[h * hd:(h + 1) * hd], m[(h + 1) * hd:]])
            return out * m

        handle = site.v.register_forward_hook(scale)
        try:
            (grad,) = torch.autograd.grad(model(**batch).loss, g)
        finally:
            handle.remove()
        expected += abs(float(grad))
    assert expected > 0
    assert float(imp[site.name][h]) == pytest.approx(expected, rel=1e-4, abs=1e-8)
    normed = michel_importance(model, batches)
    raw = imp[site.name]
    assert torch.allclose(normed[site.name], raw / raw.norm(), atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_michel_prune_then_finetune_keeps_k():
    model = tiny_bert()
    batches = bert_batches()
    imp = michel_importance(model, batches)
    flat = torch.cat(list(imp.values()))
    report = prune_to_top_k_(model, imp, 6)
    assert report["heads_kept"] == 6 and sum(head_counts(model)) == 6
    kept = set(torch.topk(flat, 6).indices.tolist())
    got = {i * 4 + h for i, s in enumerate(attention_sites(model)) for h in s.kept_heads}
    assert got == kept
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # plain fine-tuning of the pruned model
    model.train()
    for b in batches:
        opt.zero_grad()
        model(**b).loss.backward()
        opt.step()
    assert sum(head_counts(model)) == 6


def _Data(n=16, seed=0):
    return TinyClassificationData(n, seed)


def trainer_args(tmp_path, epochs=3):
    return tiny_trainer_args(tmp_path, epochs)


def test_dsp_trainer_joint_then_topk(tmp_path):
    from neuroprune_fairseq.hf.baseline_trainers import DSPTrainer

    model = tiny_bert()
    gates = attach_head_gates(model)
    w0 = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    trainer = DSPTrainer(model=model, args=trainer_args(tmp_path), train_dataset=_Data(), gates=gates, k=3)
    temps = []
    trainer.add_callback(type("T", (__import__("transformers").TrainerCallback,), {
        "on_step_begin": lambda self, a, s, c, **kw: temps.append(trainer.temperature())})())
    trainer.train()
    assert trainer.state.global_step == 12 and temps[0] == pytest.approx(0.1) and temps[-1] < temps[0] / 100
    assert not torch.equal(gates.logits.detach(), torch.zeros(8))
    assert not torch.equal(model.bert.encoder.layer[0].attention.self.query.weight.detach(), w0)
    report = dsp_topk_(model, gates, 3)
    assert report["heads_kept"] == 3
    with pytest.raises(ValueError, match=r"integer in \[1, 8\]"):
        DSPTrainer(model=tiny_bert(), args=trainer_args(tmp_path), train_dataset=_Data(),
                   gates=attach_head_gates(tiny_bert()), k=0)


def test_pipelined_gate_phase_leaves_weights():
    model = tiny_bert()
    batches = bert_batches(2)
    gates = attach_head_gates(model)
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    dsp_joint_train_(model, gates, 4, lambda: batches, epochs=2, train_weights=False, anneal_steps=250)
    assert all(torch.equal(p.detach(), w0[n]) for n, p in model.named_parameters())
    assert not torch.equal(gates.logits.detach(), torch.zeros(8))
