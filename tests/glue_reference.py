"""The reference the GLUE runner is checked against (issue 13): plain PyTorch fine-tuning.

``plain_finetune`` is the smallest loop that fine-tunes an ``AutoModelForSequenceClassification``
on a list of ``(texts, label)`` examples: shuffle each epoch, AdamW at a constant learning
rate, no warm-up, no clipping, no Trainer. ``sts_from_paraphrases`` turns a paraphrase task
(MRPC) into an STS-B-like regression set, so the regression path is checked on real text.
"""
import random
from typing import Dict, List, Sequence

import torch

from neuroprune_fairseq.hf.glue import Example, GlueTask, compute_metrics


def sts_from_paraphrases(examples: Sequence[Example], seed: int = 0) -> List[Example]:
    """STS-like scores from MRPC pairs: a third of the pairs get the second sentence of a
    random other pair and score 0.0 (unrelated); the rest keep their pair and score 5.0
    (paraphrase) or 2.5 (same story, not a paraphrase)."""
    rng = random.Random(seed)
    out = []
    for (a, b), y in examples:
        if rng.random() < 1 / 3:
            out.append(((a, examples[rng.randrange(len(examples))][0][1]), 0.0))
        else:
            out.append(((a, b), 5.0 if y == 1 else 2.5))
    return out


def write_sts_tsv(path: str, examples: Sequence[Example]) -> None:
    """Write ``examples`` in the glue_data STS-B layout (``sentence1 sentence2 score``)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence1\tsentence2\tscore\n")
        for (a, b), s in examples:
            if "\t" in a + b or "\n" in a + b:
                raise ValueError(f"sentence with a tab or newline cannot go in a TSV: {a!r} / {b!r}")
            f.write(f"{a}\t{b}\t{s}\n")


def _batch(tok, examples, max_seq_length, regression):
    texts = list(zip(*[t for t, _ in examples]))
    enc = tok(*[list(t) for t in texts], truncation=True, max_length=max_seq_length, padding=True,
              return_tensors="pt")
    enc["labels"] = torch.tensor([y for _, y in examples], dtype=torch.float if regression else torch.long)
    return enc


@torch.no_grad()
def evaluate(model, tok, task: GlueTask, dev, max_seq_length=128, batch_size=64) -> Dict[str, float]:
    """The task's metrics of ``model`` on ``dev`` (model left in eval mode; {} for no examples)."""
    model.eval()
    preds = []
    for i in range(0, len(dev), batch_size):
        enc = _batch(tok, dev[i:i + batch_size], max_seq_length, task.labels is None)
        enc.pop("labels")
        logits = model(**enc).logits
        preds += logits[:, 0].tolist() if task.labels is None else logits.argmax(-1).tolist()
    return compute_metrics(task, preds, [y for _, y in dev]) if dev else {}


def plain_finetune(model, tok, task: GlueTask, train: Sequence[Example], dev: Sequence[Example], *,
                   epochs: int = 2, lr: float = 1e-4, batch_size: int = 16, max_seq_length: int = 128,
                   seed: int = 42, weight_decay: float = 0.0, shuffle: bool = True) -> Dict:
    """Fine-tune ``model`` (an ``AutoModelForSequenceClassification``, trained in place) on
    ``train``: each epoch a fresh random order (``shuffle=False``: file order), batches padded
    to their longest example, AdamW at a constant ``lr``. Returns the dev metrics before and
    after, the per-step training losses and the mean loss of the last epoch."""
    before = evaluate(model, tok, task, dev, max_seq_length)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    losses: List[float] = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen).tolist() if shuffle else list(range(len(train)))
        for i in range(0, len(order), batch_size):
            batch = _batch(tok, [train[j] for j in order[i:i + batch_size]], max_seq_length, task.labels is None)
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    per_epoch = -(-len(train) // batch_size)
    return {"before": before, "after": evaluate(model, tok, task, dev, max_seq_length), "train_losses": losses,
            "train_loss_last_epoch": sum(losses[-per_epoch:]) / per_epoch}


def main(argv=None) -> Dict:
    """The plain loop on a whole task, as evidence next to the runner (README "GLUE recipe"):
    ``python tests/glue_reference.py --task RTE --data-dir ../shared/data/glue --lr 5e-5 --epochs 3``.
    Prints (and with --results-file appends) one JSON line: dev metrics before and after."""
    import argparse
    import json
    import time

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from neuroprune_fairseq.hf.glue import get_task, load_split
    from neuroprune_fairseq.recipes.hf_run import default_model

    p = argparse.ArgumentParser(description="plain PyTorch fine-tuning of a GLUE task (the runner's reference)")
    p.add_argument("--task", required=True)
    p.add_argument("--data-dir", required=True, help="glue folder with <TASK>/train.tsv, dev.tsv")
    p.add_argument("--model", default=None, help="default: the installed all-MiniLM-L6-v2")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results-file", help="append the JSON line here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task, name = get_task(args.task), args.model or default_model()
    train, dev = load_split(task, "train", args.data_dir), load_split(task, "dev", args.data_dir)
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=1 if task.labels is None else len(task.labels))
    t0 = time.time()
    res = plain_finetune(model, AutoTokenizer.from_pretrained(name), task, train, dev, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, max_seq_length=args.max_seq_length, seed=args.seed)
    row = {"task": task.name, "method": "plain-reference-loop", "lr": args.lr, "epochs": args.epochs,
           "batch_size": args.batch_size, "max_seq_length": args.max_seq_length, "seed": args.seed,
           "train_samples": len(train), "before": res["before"], **res["after"],
           "train_loss_last_epoch": round(res["train_loss_last_epoch"], 4), "train_time_s": round(time.time() - t0, 1)}
    print(json.dumps(row), flush=True)
    if args.results_file:
        with open(args.results_file, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


if __name__ == "__main__":
    main()
