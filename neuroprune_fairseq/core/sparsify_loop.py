"""The sparsity step around every optimizer step, written once for both adapters (torch only).

``--np-proximal`` / ``--np-target-sparsity`` (fairseq) and ``proximal`` / ``target_sparsity``
(HF) run the same loop: before the optimizer step, remember the zeros when the cut holds the
target; after it, put those zeros back, take the target of the schedule (:func:`.target.cubic_target`),
then either the penalty-driven step (:func:`.controller.penalty_driven_step_`, ``mode="penalty"``)
or the proximal step and the cut (:func:`.target.sparsify_step_`, ``mode="cut"``). The adapters
say what the loop acts on (:class:`.target.SparsifyRoles`, e.g. fp32 views of a master copy),
the penalty coefficients of the update, the per-weight step of their optimizer and the
learning rate; they log what they like from :attr:`last_target`, :attr:`multipliers` and
:attr:`cut_zeros`.
"""
from typing import Callable, Dict, Optional, Sequence, Tuple

from torch import Tensor

from .controller import StrengthController, penalty_driven_step_, ramp_done
from .target import SparsifyRoles, StepOf, cubic_target, reapply_masks_, sparsify_step_, zero_masks


class SparsifyLoop:
    """State of the sparsity step over one run: the controller (penalty mode), the zero masks
    between the two halves of a step, and the weights the cut zeroed so far.

    ``target``: percent S or None; ``start`` / ``end``: the ramp, fractions of the run; ``mode``
    'penalty' or 'cut'; ``gain``: the controller's; ``proximal``: the penalty is applied as a
    proximal step (implied by the penalty mode)."""

    def __init__(self, target: Optional[float], start: float, end: float, mode: str, gain: float, proximal: bool):
        self.target, self.start, self.end, self.mode = target, start, end, mode
        self.driven = target is not None and mode == "penalty"
        self.proximal = bool(proximal) or self.driven
        self.controller = StrengthController(gain=float(gain)) if self.driven else None
        self.cut_zeros = 0  # weights the target's cut set to zero over the run
        self.last_target: Optional[float] = None
        self.multipliers: Optional[Dict[str, float]] = None
        self._masks = None

    def ramp_done(self, step: int, total: int) -> bool:
        return ramp_done(step, total, self.end)

    def masks_due(self, ramp_over: Callable[[], bool]) -> bool:
        """Whether the cut holds the target at this step (the cut mode, or the penalty mode once
        ``ramp_over()``): then the zeros are remembered before the optimizer step."""
        return self.target is not None and (not self.driven or ramp_over())

    def take_masks(self, weights: Sequence[Tensor]) -> None:
        """Before the optimizer step: remember where ``weights`` are zero (:meth:`after_step` puts
        those zeros back)."""
        self._masks = zero_masks(weights)

    def strengths(self, coef_attn: float, coef_mlp: float, step_of: Optional[StepOf], lr: float) -> Tuple[float, float]:
        """The proximal strengths of this step: the penalty coefficients as they are when
        ``step_of`` gives the optimizer's per-weight step, times ``lr`` when it does not
        (Euclidean); zero without a proximal step."""
        if not self.proximal:
            return 0.0, 0.0
        if step_of is None:
            return lr * coef_attn, lr * coef_mlp
        return coef_attn, coef_mlp

    def after_step(self, roles: SparsifyRoles, lam_attn: float, lam_mlp: float, step_of: Optional[StepOf],
                   step: int, total: int) -> Optional[float]:
        """After optimizer step ``step`` (1-based) of ``total`` (any value when there is no target):
        the zeros put back, then the penalty-driven step or the proximal step and the cut. Returns
        the scheduled target (percent, or None)."""
        if self._masks is not None:
            reapply_masks_(roles.counted, self._masks)
            self._masks = None
        target = None
        if self.target is not None:
            target = cubic_target(step, total, self.target, self.start, self.end)
            self.last_target = target
        if self.driven:
            rep = penalty_driven_step_(roles, lam_attn, lam_mlp, step_of, target, self.controller, step, total, self.end)
            self.cut_zeros += rep["cut"]
            self.multipliers = rep["multipliers"]
        else:
            self.cut_zeros += sparsify_step_(roles, lam_attn, lam_mlp, self.proximal, target, step_of=step_of)
        return target

    def cut_points(self, dense: int) -> float:
        """The points of sparsity (percent of ``dense``) the cut made over the run."""
        return 100.0 * self.cut_zeros / max(dense, 1)

    def state_dict(self) -> Dict:
        return {"controller": self.controller.state_dict() if self.controller else None, "cut_zeros": self.cut_zeros}

    def load_state_dict(self, state: Dict) -> None:
        if state.get("controller") and self.controller is not None:
            self.controller.load_state_dict(state["controller"])
        self.cut_zeros = int(state.get("cut_zeros", 0))
