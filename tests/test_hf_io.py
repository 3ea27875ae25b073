import json
import os

import pytest
import torch

pytest.importorskip("transformers")

from hf_helpers import duplicate_heads_, tiny_bert, tiny_opt, tiny_t5  # noqa: E402
from neuroprune_fairseq.hf import (  # noqa: E402
    attention_sites, head_counts, load_pruned, model_sparsity, prune_heads, prune_redundant_heads_, save_pruned)


def _prune_some(model):
    sites = attention_sites(model)
    duplicate_heads_(sites[0], [(0, 1), (0, 2)])
    duplicate_heads_(sites[-1], [(3, 1)])
    prune_redundant_heads_(model, theta=1e-6)


@pytest.mark.parametrize("make,inputs", [
    (tiny_bert, lambda: dict(input_ids=torch.tensor([[5, 7, 9, 11, 2]]), attention_mask=torch.ones(1, 5, dtype=torch.long))),
    (tiny_t5, lambda: dict(input_ids=torch.tensor([[5, 7, 9, 1]]), decoder_input_ids=torch.tensor([[0, 4, 6]]))),
    (tiny_opt, lambda: dict(input_ids=torch.tensor([[2, 5, 7, 9, 11]]))),
])
def test_save_load_roundtrip_exact(tmp_path, make, inputs):
    model = make()
    _prune_some(model)
    # also a further, unmerged removal in the middle module -> head counts all differ
    sites = attention_sites(model)
    if len(sites) > 2:
        prune_heads(model, {sites[1].name: [0, 2, 3]})
    x = inputs()
    with torch.no_grad():
        ref = model(**x).logits
    counts = head_counts(model)
    assert len(set(counts)) > 1
    save_pruned(model, str(tmp_path))
    loaded = load_pruned(str(tmp_path))
    assert type(loaded).__name__ == type(model).__name__ or type(loaded) is type(model)
    assert head_counts(loaded) == counts
    assert [s.kept_heads for s in attention_sites(loaded)] == [s.kept_heads for s in attention_sites(model)]
    with torch.no_grad():
        out = loaded(**x).logits
    assert torch.equal(out, ref)
    assert model_sparsity(loaded).sparsity == pytest.approx(model_sparsity(model).sparsity)
    assert model_sparsity(loaded).sparsity > 0


def test_from_pretrained_without_trust_remote_code_fails_naming_it(tmp_path):
    """The folder is remote code (config.json's model_type is no stock one): without
    trust_remote_code=True the auto classes refuse, naming it; config.json says both ways to load;
    a class-specific from_pretrained finds no model.safetensors (never a silent dense model)."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, BertForSequenceClassification

    model = tiny_bert()
    _prune_some(model)
    save_pruned(model, str(tmp_path))
    for auto in (AutoModel, AutoModelForSequenceClassification, AutoConfig):
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            auto.from_pretrained(str(tmp_path), trust_remote_code=False)
    with pytest.raises(OSError):
        BertForSequenceClassification.from_pretrained(str(tmp_path))
    config = json.load(open(os.path.join(tmp_path, "config.json")))
    assert config["model_type"] == "neuroprune_pruned"
    assert "trust_remote_code=True" in config["neuroprune_how_to_load"] and "load_pruned" in config["neuroprune_how_to_load"]
    assert config["auto_map"]["AutoModelForSequenceClassification"] == \
        "modeling_neuroprune.NeuroPrunedAutoModelForSequenceClassification"
    record = json.load(open(os.path.join(tmp_path, "neuroprune_pruned.json")))
    assert record == config["neuroprune"]
    assert json.load(open(os.path.join(tmp_path, "neuroprune_config.json"))) == config["base_config"]
    assert record["attention"]["bert.encoder.layer.0.attention"]["kept_heads"] == [2, 3]
    assert record["model_class"] == "BertForSequenceClassification"
    assert set(os.listdir(tmp_path)) >= {"config.json", "modeling_neuroprune.py", "neuroprune_layers.py",
                                         "neuroprune_config.json", "neuroprune_model.safetensors"}


def test_load_pruned_rejects_plain_folder(tmp_path):
    tiny_bert().save_pretrained(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="save_pruned"):
        load_pruned(str(tmp_path))


def _zero_structure_(model):
    """Input groups 0..2 of the first attention's [Q; K; V], fc2 rows 1 and 3 and fc2 columns
    (neurons) 0..4 of the first MLP, out-projection row 2 of the last attention."""
    from neuroprune_fairseq.hf.roles import mlp_sites

    a, m = attention_sites(model), mlp_sites(model)
    with torch.no_grad():
        for lin in (a[0].q, a[0].k, a[0].v):
            lin.weight[:, :3] = 0
        m[0].fc2.weight[[1, 3]] = 0
        m[0].fc2.weight[:, :5] = 0
        a[-1].out.weight[2] = 0


@pytest.mark.parametrize("make,inputs", [
    (tiny_bert, lambda: dict(input_ids=torch.tensor([[5, 7, 9, 11, 2]]), attention_mask=torch.ones(1, 5, dtype=torch.long))),
    (tiny_t5, lambda: dict(input_ids=torch.tensor([[5, 7, 9, 1]]), decoder_input_ids=torch.tensor([[0, 4, 6]]))),
    (tiny_opt, lambda: dict(input_ids=torch.tensor([[2, 5, 7, 9, 11]]))),
])
def test_save_removes_zeroed_structure_with_outputs_equal(tmp_path, make, inputs):
    """save_pruned removes zeroed input groups (gathers), zero fc2 / out rows (scatters) and unread
    neurons; load_pruned rebuilds them; outputs equal; the sparsity and structure counts agree."""
    from neuroprune_fairseq.core.policy import structure
    from neuroprune_fairseq.core.structured_linear import StructuredLinear
    from neuroprune_fairseq.hf.roles import mlp_sites

    model = make()
    _prune_some(model)
    _zero_structure_(model)
    x = inputs()
    with torch.no_grad():
        ref = model(**x).logits
    before = structure(attention_sites(model), mlp_sites(model))
    assert before["input_groups_zeroed"] >= 3 and before["mlp_neurons_dead"] >= 5
    save_pruned(model, str(tmp_path))
    assert not any(isinstance(m, StructuredLinear) for m in model.modules())  # the caller's model is untouched
    loaded = load_pruned(str(tmp_path))
    a0 = attention_sites(loaded)[0]
    assert isinstance(a0.q, StructuredLinear) and a0.q.weight.shape[1] == a0.q.full_in - 3
    m0 = mlp_sites(loaded)[0]
    assert m0.fc1[0].weight.shape[0] == m0.dense_dim - 5
    with torch.no_grad():
        out = loaded(**x).logits
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-5)
    # the unread neurons' fc1 rows (non-zero, but never read) count as removed now
    dead_fc1 = sum(int((f.weight[:5] != 0).sum()) for f in mlp_sites(model)[0].fc1)
    rep, rep0 = model_sparsity(loaded), model_sparsity(model)
    assert rep.dense == rep0.dense and rep.zero + rep.removed == rep0.zero + rep0.removed + dead_fc1
    after = structure(attention_sites(loaded), mlp_sites(loaded))
    for key in ("input_groups_zeroed", "mlp_neurons_dead", "fc2_rows_zero"):
        assert after[key] == before[key], key


def test_load_pruned_reads_config_json_alone_and_old_folders(tmp_path):
    """load_pruned reads the remote-code config.json (record and real config inside); a folder
    without the side files loads the same, and so does one of the layout before remote code
    (a stub config.json, the record and config in the side files)."""
    model = tiny_bert()
    _prune_some(model)
    _zero_structure_(model)
    x = dict(input_ids=torch.tensor([[5, 7, 9, 11, 2]]), attention_mask=torch.ones(1, 5, dtype=torch.long))
    save_pruned(model, str(tmp_path))
    with torch.no_grad():
        ref = load_pruned(str(tmp_path))(**x).logits
    side = {n: open(os.path.join(tmp_path, n)).read() for n in ("neuroprune_pruned.json", "neuroprune_config.json")}
    for n in side:
        os.remove(os.path.join(tmp_path, n))
    with torch.no_grad():
        assert torch.equal(load_pruned(str(tmp_path))(**x).logits, ref)
    for n, text in side.items():
        open(os.path.join(tmp_path, n), "w").write(text)
    with open(os.path.join(tmp_path, "config.json"), "w") as f:
        json.dump({"model_type": "neuroprune_pruned (a head-pruned model: load it with "
                                 "neuroprune_fairseq.hf.load_pruned(dir))"}, f)
    with torch.no_grad():
        assert torch.equal(load_pruned(str(tmp_path))(**x).logits, ref)
