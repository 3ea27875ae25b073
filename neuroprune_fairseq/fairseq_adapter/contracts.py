"""What NeuroPrune's fairseq pieces ask of each other, said once.

fairseq's own criteria and tasks declare what they read as fields of their config dataclasses;
what one NeuroPrune piece reads from another at run time is declared here instead of guessed
with ``hasattr`` / ``getattr``:

* :class:`NeuroPruneTask`: what the task (``neuroprune_translation``) offers its criterion and
  its sparsifier. A task offers it by inheriting the class; the criterion checks ``isinstance``.
* :class:`PenaltySettings`: what the sparsifier (``--np-proximal`` / ``--np-target-sparsity``)
  reads from the criterion (``neuroprune_ce`` / ``l1_ce`` provide it), a ``typing.Protocol``.
"""
from typing import Optional, Protocol, Tuple


class NeuroPruneTask:
    """The interface of NeuroPrune's fairseq task, for its criterion and its sparsifier.

    * :meth:`prune`: epoch-end redundancy pruning of the heads. A ``neuroprune_ce`` / ``l1_ce``
      criterion under a task that is not a :class:`NeuroPruneTask` warns that the penalties are
      trained but no head is ever pruned.
    * :attr:`penalty_by_proximal_step`: True when the task applies the criterion's penalty as a
      proximal step after every update (``--np-proximal``, or ``--np-target-sparsity`` in the
      penalty mode): the criterion then logs the penalty but adds nothing to the loss.
    * :attr:`train_itr`: the training epoch iterator the task handed out last (None before the
      first), from which the sparsifier reads the run's length and the end of an epoch.
    """

    penalty_by_proximal_step: bool = False
    train_itr: Optional[object] = None

    def prune(self, epoch: int, model, optimizer=None):
        raise NotImplementedError(f"{type(self).__name__} must say how it prunes heads at an epoch's end")

    # the private name ``recipes/bench_speed.py`` sets (the attribute was private before it was declared)
    @property
    def _train_itr(self):
        return self.train_itr

    @_train_itr.setter
    def _train_itr(self, itr) -> None:
        self.train_itr = itr


def penalty_by_proximal_step(task) -> bool:
    """Whether ``task`` applies the criterion's penalty as a proximal step (a task that is not a
    :class:`NeuroPruneTask` never does)."""
    return isinstance(task, NeuroPruneTask) and bool(task.penalty_by_proximal_step)


class PenaltySettings(Protocol):
    """What the sparsifier reads from the criterion of the run: the penalty, its strengths and
    their units, and which modules it penalises (the criterion's ``--np-*`` options, parsed)."""

    alpha: float  # --np-alpha: the attention penalty's weight
    beta: float  # --np-beta: the MLP penalty's weight
    np_eps: float  # --np-eps (the criterion's ``eps`` is label smoothing)
    penalty: str  # --np-penalty: 'neuroprune' or 'l1'
    scale: str  # --np-penalty-scale: 'batch' or 'token'
    attn_kinds: Tuple[str, ...]  # --np-attn-modules
    mlp_kinds: Tuple[str, ...]  # --np-mlp-modules
