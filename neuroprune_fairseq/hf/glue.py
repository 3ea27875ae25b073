"""GLUE tasks: readers for the original ``glue_data`` layout, the hub fallback, metrics.

Pure Python (no transformers import). ``glue_data/<TASK>/{train,dev}.tsv`` (MNLI:
``dev_matched.tsv``); MRPC files start with a byte-order mark; CoLA has no header.
"""
import csv
import math
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class GlueTask:
    name: str  # folder name in glue_data
    hub_name: str  # ``datasets.load_dataset("glue", hub_name)``
    text_fields: Tuple  # header names, or column indices when there is no header
    label_field: object
    labels: Optional[Tuple[str, ...]]  # None: regression (STS-B)
    metrics: Tuple[str, ...]
    has_header: bool = True
    dev_file: str = "dev.tsv"
    hub_text: Tuple[str, ...] = ("sentence",)
    hub_dev: str = "validation"


TASKS: Dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask("CoLA", "cola", (3,), 1, ("0", "1"), ("mcc", "accuracy"), has_header=False),
        GlueTask("SST-2", "sst2", ("sentence",), "label", ("0", "1"), ("accuracy",)),
        GlueTask("MRPC", "mrpc", ("#1 String", "#2 String"), "Quality", ("0", "1"), ("accuracy", "f1"),
                 hub_text=("sentence1", "sentence2")),
        GlueTask("QQP", "qqp", ("question1", "question2"), "is_duplicate", ("0", "1"), ("accuracy", "f1"),
                 hub_text=("question1", "question2")),
        GlueTask("STS-B", "stsb", ("sentence1", "sentence2"), "score", None, ("pearson", "spearman"),
                 hub_text=("sentence1", "sentence2")),
        GlueTask("MNLI", "mnli", ("sentence1", "sentence2"), "gold_label",
                 ("contradiction", "entailment", "neutral"), ("accuracy",), dev_file="dev_matched.tsv",
                 hub_text=("premise", "hypothesis"), hub_dev="validation_matched"),
        GlueTask("QNLI", "qnli", ("question", "sentence"), "label", ("entailment", "not_entailment"),
                 ("accuracy",), hub_text=("question", "sentence")),
        GlueTask("RTE", "rte", ("sentence1", "sentence2"), "label", ("entailment", "not_entailment"),
                 ("accuracy",), hub_text=("sentence1", "sentence2")),
        GlueTask("WNLI", "wnli", ("sentence1", "sentence2"), "label", ("0", "1"), ("accuracy",),
                 hub_text=("sentence1", "sentence2")),
    ]
}
_ALIASES = {k.lower().replace("-", ""): k for k in TASKS}


def get_task(name: str) -> GlueTask:
    key = name.lower().replace("-", "").replace("_", "")
    if key not in _ALIASES:
        raise ValueError(f"unknown GLUE task {name!r}; choose one of {sorted(TASKS)}")
    return TASKS[_ALIASES[key]]


Example = Tuple[Tuple[str, ...], object]  # (texts, label id or float)


def read_tsv(task: GlueTask, path: str) -> List[Example]:
    """Read one split of the original glue_data layout; labels become ids (or floats)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{task.name}: no file {path}")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(path, encoding="utf-8-sig", newline="") as f:  # utf-8-sig strips MRPC's BOM
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if task.has_header:
        header, rows = rows[0], rows[1:]
        col = {name: i for i, name in enumerate(header)}
        missing = [n for n in (*task.text_fields, task.label_field) if n not in col]
        if missing:
            raise ValueError(f"{path}: header {header} lacks {missing}")
        text_idx = [col[n] for n in task.text_fields]
        label_idx = col[task.label_field]
    else:
        text_idx, label_idx = list(task.text_fields), task.label_field
    out = []
    for lineno, row in enumerate(rows, start=2 if task.has_header else 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(*text_idx, label_idx):
            raise ValueError(f"{path}:{lineno}: expected more columns, got {len(row)}")
        out.append((tuple(row[i] for i in text_idx), _label(task, row[label_idx], f"{path}:{lineno}")))
    return out


def _label(task: GlueTask, raw: str, where: str):
    raw = raw.strip()
    if task.labels is None:
        return float(raw)
    if raw not in task.labels:
        raise ValueError(f"{where}: label {raw!r} not in {task.labels}")
    return task.labels.index(raw)


def load_split(task: GlueTask, split: str, data_dir: Optional[str]) -> List[Example]:
    """``split`` is 'train' or 'dev'. From ``data_dir/<TASK>/`` when given, else the hub."""
    if data_dir:
        fname = "train.tsv" if split == "train" else task.dev_file
        return read_tsv(task, os.path.join(data_dir, task.name, fname))
    try:
        import datasets
    except ImportError as e:
        raise RuntimeError("no --data-dir given and the `datasets` package is not installed "
                           "(pip install datasets, or pass a local glue_data folder)") from e
    ds = datasets.load_dataset("glue", task.hub_name, split="train" if split == "train" else task.hub_dev)
    out = []
    for ex in ds:
        label = ex["label"]
        if task.labels is not None and task.name in ("MNLI",):
            # hub MNLI: 0 entailment, 1 neutral, 2 contradiction -> this module's order
            label = task.labels.index(["entailment", "neutral", "contradiction"][label])
        out.append((tuple(ex[f] for f in task.hub_text), label))
    return out


# ------------------------------------------------------------------ metrics (pure Python)
def accuracy(preds: Sequence[int], labels: Sequence[int]) -> float:
    if len(preds) != len(labels) or not labels:
        raise ValueError("accuracy needs two non-empty sequences of the same length")
    return sum(int(p == y) for p, y in zip(preds, labels)) / len(labels)


def f1_binary(preds: Sequence[int], labels: Sequence[int], positive: int = 1) -> float:
    tp = sum(1 for p, y in zip(preds, labels) if p == positive and y == positive)
    fp = sum(1 for p, y in zip(preds, labels) if p == positive and y != positive)
    fn = sum(1 for p, y in zip(preds, labels) if p != positive and y == positive)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews_corrcoef(preds: Sequence[int], labels: Sequence[int]) -> float:
    """Binary MCC; 0 when a marginal is empty (as scikit-learn)."""
    tp = sum(1 for p, y in zip(preds, labels) if p == 1 and y == 1)
    tn = sum(1 for p, y in zip(preds, labels) if p == 0 and y == 0)
    fp = sum(1 for p, y in zip(preds, labels) if p == 1 and y == 0)
    fn = sum(1 for p, y in zip(preds, labels) if p == 0 and y == 1)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return 0.0 if denom == 0 else (tp * tn - fp * fn) / denom


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sx = math.sqrt(sum((a - mx) ** 2 for a in x))
    sy = math.sqrt(sum((b - my) ** 2 for b in y))
    return 0.0 if sx == 0 or sy == 0 else sxy / (sx * sy)


def _ranks(x: Sequence[float]) -> List[float]:
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    return pearson(_ranks(x), _ranks(y))


def compute_metrics(task: GlueTask, preds, labels) -> Dict[str, float]:
    """The task's GLUE metrics (``mcc`` = Matthews correlation) from predictions."""
    fns = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews_corrcoef, "pearson": pearson, "spearman": spearman}
    return {m: fns[m](list(preds), list(labels)) for m in task.metrics}
