"""CoFi on HF BERT-family models through hooks: expected size, 0/1 masks = physical removal,
the Lagrangian's pull toward the target."""
import pytest
import torch

pytest.importorskip("transformers")

from hf_helpers import tiny_bert  # noqa: E402
from neuroprune_fairseq.hf.cofi import CoFiMasks  # noqa: E402
from neuroprune_fairseq.hf.cofi_hooks import masked_logits  # noqa: E402
from neuroprune_fairseq.hf.cofi_prune import apply_cofi_masks_, matrix_size  # noqa: E402
from neuroprune_fairseq.hf.cofi_train import train_cofi_  # noqa: E402
from neuroprune_fairseq.hf.roles import attention_sites, mlp_sites  # noqa: E402

BIG = 100.0  # log-alpha making a mask's probability of being non-zero 1 - 1e-6 (CoFi's clamp)


def tiny_roberta(seed=0):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=24, max_position_embeddings=40, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=1)
    return RobertaForSequenceClassification(cfg).eval()


def inputs(seed=0, n=3, t=7):
    g = torch.Generator().manual_seed(seed)
    return dict(input_ids=torch.randint(3, 60, (n, t), generator=g), attention_mask=torch.ones(n, t, dtype=torch.long))


def set_all_(masks, value):
    with torch.no_grad():
        for p in masks.log_alpha.values():
            p.fill_(value)


def hand_count(model):
    """q, k, v, out weights and biases + fc1, fc2 weights: what CoFi's size formula covers."""
    n = 0
    for a in attention_sites(model):
        n += sum(lin.weight.numel() + lin.bias.numel() for lin in (a.q, a.k, a.v, a.out))
    for m in mlp_sites(model):
        n += m.fc1[0].weight.numel() + m.fc2.weight.numel()
    return n


def test_expected_size_against_hand_counts():
    model = tiny_bert()
    masks = CoFiMasks(model, target=0.5)
    d, H, hd, Fd, L = 16, 4, 4, 24, 2
    set_all_(masks, BIG)
    dense = hand_count(model)
    assert dense == L * (4 * d * d + 4 * d) + L * 2 * d * Fd == 3712
    assert float(masks.expected_size()) == pytest.approx(dense, rel=1e-5)
    assert masks.prunable_size == dense + L * 5 * d  # CoFi's params_per_mlp_layer adds 5d per layer
    assert float(masks.expected_sparsity()) == pytest.approx(1 - dense / masks.prunable_size, abs=1e-5)
    one_head = 3 * (hd * d + hd) + d * hd + d // H  # q/k/v rows and biases, out columns, 1/H of out's bias
    cases = [
        ("head", (1, 2), one_head),
        ("head_layer", (0,), 4 * d * d + 4 * d),
        ("intermediate", (0, 5), 2 * d),
        ("mlp", (1,), 2 * d * Fd),
        ("hidden", (3,), L * (4 * d + 4 + 2 * Fd)),  # q,k,v columns, out row, 4 bias shares, fc1 column, fc2 row
    ]
    for t, idx, removed in cases:
        set_all_(masks, BIG)
        with torch.no_grad():
            masks.log_alpha[t][idx] = -BIG
        assert float(masks.expected_size()) == pytest.approx(dense - removed, rel=1e-5), t
    set_all_(masks, BIG)
    with torch.no_grad():
        masks.log_alpha["head"][0, 0] = -BIG
        masks.log_alpha["hidden"][0] = -BIG
    overlap = one_head - one_head / d  # the head's share on the removed hidden dimension counts once
    expected = dense - L * (4 * d + 4 + 2 * Fd) - overlap
    assert float(masks.expected_size()) == pytest.approx(expected, rel=1e-5)


def fixed_masks():
    return {
        "head": torch.tensor([[1., 0., 1., 1.], [0., 0., 1., 0.]]),
        "head_layer": torch.tensor([1., 1.]),
        "intermediate": (torch.arange(48).reshape(2, 24) % 3 != 0).float(),
        "mlp": torch.tensor([1., 1.]),
        "hidden": torch.tensor([1.] * 5 + [0.] + [1.] * 6 + [0., 1., 0., 1.]),
    }


@pytest.mark.parametrize("make", [tiny_bert, tiny_roberta])
def test_binary_masks_equal_physical_removal(make):
    model = make()
    x = inputs()
    zs = fixed_masks()
    masks = CoFiMasks(model)
    masks.fixed = zs
    ref = masked_logits(model, masks, x)
    dense_out = model(**x).logits
    assert not torch.allclose(ref, dense_out, atol=1e-3)  # the masks do something
    report = apply_cofi_masks_(model, zs)
    assert report["heads_per_layer"] == [3, 1] and report["ffn_dims_per_layer"] == [16, 16]
    assert report["hidden_dims"] == 13
    sites = attention_sites(model)
    assert [s.q.weight.shape for s in sites] == [(12, 13), (4, 13)]
    assert [m.fc1[0].weight.shape for m in mlp_sites(model)] == [(16, 13), (16, 13)]
    with torch.no_grad():
        got = model(**x).logits
    assert torch.allclose(got, ref, atol=1e-5)
    # CoFi's remaining size = the weights present in the pruned model's shapes
    assert report["remaining_size"] == report["matrix_size"] == matrix_size(model) == 4 * 4 * 13 * 4 + 32 * 13 * 2


def test_whole_layers_removed_and_soft_deterministic_masks():
    model = tiny_bert()
    x = inputs(1)
    masks = CoFiMasks(model)
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        for t, p in masks.log_alpha.items():
            p.copy_(torch.randn(p.shape, generator=g) * 3 + (2.0 if t == "hidden" else 0.0))
        masks.log_alpha["head_layer"][0] = -BIG  # attention of layer 0 gone
        masks.log_alpha["mlp"][1] = -BIG  # FFN of layer 1 gone
        masks.log_alpha["head_layer"][1] = masks.log_alpha["mlp"][0] = 1.0  # kept, with soft values
    zs = masks.deterministic_masks()
    soft = zs["head"][(zs["head"] > 0) & (zs["head"] < 1)]
    assert 0 < float(zs["mlp"][0]) < 1 and float(zs["mlp"][1]) == 0 and float(zs["head_layer"][0]) == 0
    # kept units carry CoFi's soft values (folded into the weights), some are 0
    assert soft.numel() > 0 and bool((zs["head"][1] == 0).any()) and bool((zs["intermediate"] == 0).any())
    assert set(zs["hidden"].unique().tolist()) <= {0.0, 1.0}
    ref = masked_logits(model, masks, x)
    report = apply_cofi_masks_(model, masks)
    assert report["attention_layers_removed"] == [0] and report["ffn_layers_removed"] == [1]
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, ref, atol=1e-5)
    assert report["remaining_size"] == report["matrix_size"]


def test_lagrangian_pulls_expected_sparsity_to_target():
    torch.manual_seed(0)
    model = tiny_bert()
    g = torch.Generator().manual_seed(0)
    batches = [dict(**inputs(i, n=4), labels=torch.randint(0, 2, (4,), generator=g)) for i in range(10)]
    masks = CoFiMasks(model, target=0.5, warmup_steps=0)
    s0 = float(masks.expected_sparsity())
    out = train_cofi_(model, masks, lambda: batches, epochs=30, lr=1e-4, reg_lr=0.01)
    assert out["steps"] == 300
    s1 = out["log"][-1]["expected_sparsity"]
    assert abs(0.5 - s1) < 0.5 * abs(0.5 - s0), (s0, s1)
    assert out["log"][-1]["lambda_1"] < 0  # ascent: below target, lambda_1 goes negative
    assert masks.log_alpha["head"].grad is not None and masks.log_alpha["hidden"].grad is not None


def test_target_ramp_and_bad_targets():
    model = tiny_bert()
    masks = CoFiMasks(model, target=0.6, warmup_steps=100)
    assert masks.target_at(0) == 0.0 and masks.target_at(50) == pytest.approx(0.3) and masks.target_at(500) == 0.6
    for bad in (1.0, 50, -0.1, "0.5"):
        with pytest.raises(ValueError, match=r"fraction in \[0, 1\)"):
            CoFiMasks(model, target=bad)
    with pytest.raises(ValueError, match="subset of"):
        CoFiMasks(model, types=("heads",))
    with pytest.raises(ValueError, match="hidden mask must be 0/1"):
        apply_cofi_masks_(model, {"hidden": torch.full((16,), 0.5)})


def test_cofi_trainer_adds_lagrangian_and_steps_masks(tmp_path):
    from transformers import TrainingArguments

    from neuroprune_fairseq.hf.baseline_trainers import CoFiTrainer

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            x = inputs(i, n=1, t=6)
            return {"input_ids": x["input_ids"][0], "attention_mask": x["attention_mask"][0],
                    "labels": torch.tensor(i % 2)}

    model = tiny_bert()
    masks = CoFiMasks(model, target=0.5, warmup_steps=8)
    la0 = masks.log_alpha["intermediate"].detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=3, per_device_train_batch_size=4,
                             learning_rate=1e-3, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
                             logging_steps=1, seed=0, lr_scheduler_type="constant")
    trainer = CoFiTrainer(model=model, args=args, train_dataset=Data(), masks=masks, reg_lr=0.05, prepruning_steps=2)
    trainer.train()
    assert trainer.state.global_step == 12
    assert not torch.equal(masks.log_alpha["intermediate"].detach(), la0)
    assert float(masks.lambda_2) > 0  # gradient ascent on lambda_2 (s - t)^2
    logged = [h for h in trainer.state.log_history if "cofi_expected_sparsity" in h]
    assert len(logged) == 10  # the 2 pre-pruning steps add no Lagrangian
    assert [h["cofi_target_sparsity"] for h in logged] == pytest.approx([0.5 * min(1, i / 8) for i in range(10)])
    x = inputs(5)
    ref = masked_logits(model.eval(), masks, x)
    apply_cofi_masks_(model, masks)
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, ref, atol=1e-5)


def test_heads_and_ffn_pruning_saves_and_reloads(tmp_path):
    from neuroprune_fairseq.hf import load_pruned, save_pruned

    model = tiny_bert()
    zs = fixed_masks()
    zs["hidden"] = torch.ones(16)  # save_pruned / load_pruned do not rebuild narrower embeddings yet
    zs["mlp"] = torch.tensor([1., 0.])
    x = inputs(2)
    masks = CoFiMasks(model, types=("head", "head_layer", "intermediate", "mlp"))
    masks.fixed = zs
    ref = masked_logits(model, masks, x)
    report = apply_cofi_masks_(model, zs)
    assert report["ffn_layers_removed"] == [1] and report["hidden_dims"] == 16
    save_pruned(model, str(tmp_path))
    loaded = load_pruned(str(tmp_path))
    with torch.no_grad():
        assert torch.allclose(model(**x).logits, ref, atol=1e-5)
        assert torch.allclose(loaded(**x).logits, ref, atol=1e-5)


@pytest.mark.parametrize("make", [tiny_bert, tiny_roberta])
def test_hidden_dims_removed_save_and_reload(tmp_path, make):
    """save_pruned records the narrower embeddings and LayerNorms, load_pruned rebuilds them:
    the reloaded model has the pruned shapes and the same outputs."""
    from neuroprune_fairseq.hf import load_pruned, save_pruned
    from neuroprune_fairseq.hf.cofi_sites import cofi_structure

    model = make()
    zs = fixed_masks()  # 2 of 16 hidden dimensions, heads and FFN dimensions removed
    x = inputs(4)
    structure = cofi_structure(model)
    report = apply_cofi_masks_(model, zs)
    assert report["hidden_dims"] == 13 and model.config.hidden_size == 16
    with torch.no_grad():
        ref = model(**x).logits
    save_pruned(model, str(tmp_path))
    loaded = load_pruned(str(tmp_path))
    emb = [n for n, m in loaded.named_modules() if isinstance(m, torch.nn.Embedding)]
    norms = [m for m in loaded.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(emb) == 3 and len(norms) == 1 + 2 * structure.num_layers
    assert all(m.embedding_dim == 13 for m in loaded.modules() if isinstance(m, torch.nn.Embedding))
    assert all(m.normalized_shape == (13,) and m.weight.shape == m.bias.shape == (13,) for m in norms)
    assert [s.q.weight.shape for s in attention_sites(loaded)] == [(12, 13), (4, 13)]
    assert {n: p.shape for n, p in loaded.state_dict().items()} == {n: p.shape for n, p in model.state_dict().items()}
    with torch.no_grad():
        got = loaded(**x).logits
    assert torch.allclose(got, ref, atol=1e-6), (got - ref).abs().max()
    # and it prunes / saves again (a second round trip)
    save_pruned(loaded, str(tmp_path / "again"))
    with torch.no_grad():
        assert torch.allclose(load_pruned(str(tmp_path / "again"))(**x).logits, ref, atol=1e-6)
