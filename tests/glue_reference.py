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
