"""HF Trainer: --np-proximal / target sparsity (NeuroPruneArguments(proximal=..., target_sparsity=...))."""
import pytest
import torch

pytest.importorskip("transformers")

from hf_helpers import tiny_bert  # noqa: E402
from neuroprune_fairseq.hf import NeuroPruneArguments, NeuroPruneTrainer, model_sparsity, neuroprune_penalties  # noqa: E402
from test_hf_trainer import _Data  # noqa: E402


def _args(tmp_path, epochs=3, lr=1e-3):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), num_train_epochs=epochs, per_device_train_batch_size=4,
                             learning_rate=lr, save_strategy="no", report_to=[], use_cpu=True,
                             disable_tqdm=True, logging_steps=2, seed=0, lr_scheduler_type="constant")


def test_arguments_validation():
    with pytest.raises(ValueError, match="0 <= S < 100"):
        NeuroPruneArguments(alpha=1e-3, target_sparsity=100)
    with pytest.raises(ValueError, match="0 <= S < 100"):
        NeuroPruneArguments(alpha=1e-3, target_sparsity=-1)
    with pytest.raises(ValueError, match="start < end"):
        NeuroPruneArguments(alpha=1e-3, target_sparsity=50, target_start=0.8, target_end=0.5)
    with pytest.raises(ValueError, match="penalty='neuroprune' or 'l1'"):
        NeuroPruneArguments(penalty="none", proximal=True)


def test_proximal_replaces_the_penalty_gradient_and_steps_with_lr_times_alpha(tmp_path):
    model = tiny_bert().train()
    np_args = NeuroPruneArguments(alpha=0.5, beta=2.0, eps=0.05, prune_heads=False, proximal=True)
    trainer = NeuroPruneTrainer(model=model, args=_args(tmp_path, epochs=1, lr=0.0), train_dataset=_Data(),
                                neuroprune=np_args)
    batch = torch.utils.data.default_collate([_Data()[i] for i in range(4)])
    loss = trainer.compute_loss(model, dict(batch))
    with torch.no_grad():
        assert float(loss) == pytest.approx(float(model(**batch).loss), rel=1e-6)  # no penalty in the loss
    # lr 0: the optimizer and the proximal step leave every weight as it is
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_proximal_training_makes_exact_zeros(tmp_path):
    model = tiny_bert().train()
    assert model_sparsity(model).zero == 0
    np_args = NeuroPruneArguments(alpha=0.5, beta=5.0, eps=1e-2, prune_heads=False, proximal=True)
    trainer = NeuroPruneTrainer(model=model, args=_args(tmp_path, epochs=4, lr=3e-3), train_dataset=_Data(16),
                                neuroprune=np_args)
    trainer.train()
    rep = model_sparsity(model)
    assert rep.zero > 0 and rep.sparsity > 1.0
    logged = [h for h in trainer.state.log_history if "np_sparsity" in h]
    assert logged and logged[-1]["np_sparsity"] == pytest.approx(rep.sparsity, abs=1e-6)


@pytest.mark.parametrize("penalty,target", [("neuroprune", 70.0), ("l1", 40.0)])
def test_target_sparsity_is_reached_by_the_cut(tmp_path, penalty, target):
    model = tiny_bert().train()
    np_args = NeuroPruneArguments(alpha=1e-3, beta=1e-3, penalty=penalty, theta=0.02, proximal=True,
                                  target_sparsity=target, target_end=0.5, target_mode="cut", prox_metric="euclidean")
    trainer = NeuroPruneTrainer(model=model, args=_args(tmp_path, epochs=3), train_dataset=_Data(16),
                                neuroprune=np_args)
    trainer.train()
    rep = model_sparsity(model)
    assert target <= rep.sparsity <= target + 0.5, rep
    logged = [h for h in trainer.state.log_history if "np_target_sparsity" in h]
    assert logged[0]["np_target_sparsity"] < target and logged[-1]["np_target_sparsity"] == pytest.approx(target)
    assert all(h["np_sparsity"] >= h["np_target_sparsity"] - 1e-6 for h in logged)


@pytest.mark.parametrize("penalty,target", [("neuroprune", 60.0), ("l1", 40.0)])
def test_target_sparsity_is_made_by_the_penalties(tmp_path, penalty, target):
    """target_mode='penalty' (the default): the controller drives alpha and beta so that the
    proximal maps make the zeros; the cut closes at most a little at the end of the ramp, and
    the result is within half a point above S."""
    model = tiny_bert().train()
    np_args = NeuroPruneArguments(alpha=1e-3, beta=1e-3, penalty=penalty, prune_heads=False,
                                  target_sparsity=target, target_end=0.6, target_gain=0.3)
    assert np_args.by_proximal_step and np_args.target_mode == "penalty"
    trainer = NeuroPruneTrainer(model=model, args=_args(tmp_path, epochs=4), train_dataset=_Data(64),
                                neuroprune=np_args)
    trainer.train()
    rep = model_sparsity(model)
    assert target <= rep.sparsity <= target + 0.5, rep
    logged = [h for h in trainer.state.log_history if "np_target_sparsity" in h]
    assert logged[-1]["np_cut_sparsity"] < 0.25 * target  # the penalties made most of it
    assert logged[-1]["np_mult_attn"] != 1.0 and logged[-1]["np_mult_mlp"] != 1.0  # the strengths were driven
    sp = trainer.np_sparsify
    assert rep.sparsity - sp.cut_sparsity >= 0.75 * target
