"""Honest sparsity: the share of the attention and MLP matrices' weights that are exactly
zero or physically removed, relative to the dense model, on the model evaluated."""
from dataclasses import dataclass
from typing import Iterable

from torch import Tensor


def count_weights(weights: Iterable[Tensor]):
    """``(present, zero)``: how many weights the matrices hold and how many are exactly 0."""
    present = zero = 0
    for w in weights:
        present += w.numel()
        zero += int((w == 0).sum())
    return present, zero


@dataclass
class SparsityReport:
    dense: int  # weights of the dense model's attention + MLP matrices
    present: int  # weights still physically there
    zero: int  # present weights that are exactly zero

    @property
    def removed(self) -> int:
        return self.dense - self.present

    @property
    def sparsity(self) -> float:
        """Percent of the dense count that is zero or removed."""
        return 100.0 * (self.removed + self.zero) / max(self.dense, 1)


def sparsity_report(weights: Iterable[Tensor], dense_count: int) -> SparsityReport:
    present, zero = count_weights(weights)
    if present > dense_count:
        raise ValueError(f"model holds {present} weights, more than its dense count {dense_count}")
    return SparsityReport(dense_count, present, zero)
