import pytest
import torch

pytest.importorskip("transformers")

from hf_helpers import TinyClassificationData, duplicate_heads_, tiny_bert, tiny_trainer_args  # noqa: E402
from neuroprune_fairseq.hf import (  # noqa: E402
    NeuroPruneArguments, NeuroPruneTrainer, attention_sites, head_counts, neuroprune_penalties)


def _Data(n=8, seed=0):
    return TinyClassificationData(n, seed)


def _args(tmp_path, epochs=2):
    return tiny_trainer_args(tmp_path, epochs)


def test_neuroprune_args_validation():
    with pytest.raises(ValueError, match="alpha"):
        NeuroPruneArguments(alpha=-1.0)
    with pytest.raises(ValueError, match="dominating"):
        NeuroPruneArguments(dominating="greedy")
    with pytest.raises(ValueError, match="attn_modules"):
        NeuroPruneArguments(attn_modules="encoder,foo")


def test_compute_loss_adds_penalties(tmp_path):
    model = tiny_bert().train()
    np_args = NeuroPruneArguments(alpha=0.01, beta=0.5, eps=0.05, prune_heads=False)
    trainer = NeuroPruneTrainer(model=model, args=_args(tmp_path), train_dataset=_Data(), neuroprune=np_args)
    batch = torch.utils.data.default_collate([_Data()[i] for i in range(4)])
    torch.manual_seed(0)
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        task = model(**batch).loss
        r_attn, r_mlp = neuroprune_penalties(model, eps=0.05)
    assert float(r_mlp) > 0
    assert float(loss) == pytest.approx(float(task + 0.01 * r_attn + 0.5 * r_mlp), rel=1e-5)
    model.eval()
    assert float(trainer.compute_loss(model, dict(batch))) == pytest.approx(float(model(**batch).loss), rel=1e-6)


def test_trainer_prunes_after_epoch_and_keeps_training(tmp_path):
    from transformers import TrainerCallback

    model = tiny_bert().train()
    site = attention_sites(model)[0]
    duplicate_heads_(site, [(1, 2)])  # heads 1 and 2 of layer 0 start identical
    snap = {}

    class Snapshot(TrainerCallback):
        def on_epoch_begin(self, args, state, control, model=None, optimizer=None, **kw):
            if state.epoch >= 1 and "q" not in snap:  # start of epoch 2: after the pruning
                snap["q"] = site.q.weight.detach().clone()
                snap["out"] = site.out.weight.detach().clone()
                snap["heads"] = {s.name: s.num_heads for s in attention_sites(model)}

    np_args = NeuroPruneArguments(alpha=1e-4, beta=1e-4, theta=0.02)
    trainer = NeuroPruneTrainer(model=model, args=_args(tmp_path), train_dataset=_Data(),
                                neuroprune=np_args, callbacks=[Snapshot()])
    q_param = site.q.weight
    trainer.train()
    hist = trainer.np_callback.history
    assert len(hist) == 2
    first = hist[0]["modules"]["bert.encoder.layer.0.attention"]
    assert first["heads"] == 3 and first["kept"] == [0, 2, 3] and first["min_dist"] <= 0.02
    assert hist[0]["modules"]["bert.encoder.layer.1.attention"]["heads"] == 4
    assert hist[0]["modules"]["bert.encoder.layer.1.attention"]["min_dist"] > 0.02
    assert hist[0]["heads_kept"] == 7 and hist[0]["sparsity"] > 0
    assert snap["heads"]["bert.encoder.layer.0.attention"] == 3
    # same Parameter object, new shape; the optimizer kept updating it in epoch 2
    assert site.q.weight is q_param and q_param.shape == (12, 16)
    assert snap["q"].shape == (12, 16)
    assert (site.q.weight.detach() - snap["q"]).abs().max() > 1e-4
    assert (site.out.weight.detach() - snap["out"]).abs().max() > 1e-4
    torch_opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert torch_opt.state[q_param]["exp_avg"].shape == (12, 16)
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == 3


def test_epoch_loss_is_logged_under_epoch_logging_with_pruning(tmp_path):
    """The callback's own epoch-end log must not cancel the Trainer's: with
    logging_strategy='epoch' every epoch logs its loss (run_glue reports the last one)."""
    args = _args(tmp_path, epochs=2)
    args.logging_strategy = "epoch"
    trainer = NeuroPruneTrainer(model=tiny_bert().train(), args=args, train_dataset=_Data(),
                                neuroprune=NeuroPruneArguments(alpha=1e-4, beta=1e-4, theta=0.02))
    trainer.train()
    logged = trainer.state.log_history
    assert [h["epoch"] for h in logged if "loss" in h] == [1.0, 2.0]
    assert [h["epoch"] for h in logged if "np_heads_kept" in h] == [1.0, 2.0]
    assert all("np_r_attn" in h for h in logged if "loss" in h)
