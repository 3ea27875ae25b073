"""CoFi (Xia, Zhong, Chen, ACL 2022, "Structured Pruning Learns Compact and Accurate Models") on
HuggingFace BERT-family models, with hooks instead of CoFi's fork of BERT's modeling file.

:class:`CoFiMasks` holds the hard-concrete (L0, Louizos et al. 2018) log-alphas of CoFi's five
mask types, as CoFi's ``L0Module``: ``head`` [L, H], ``head_layer`` [L] (whole attention
layers), ``intermediate`` [L, F] (FFN dimensions), ``mlp`` [L] (whole FFN layers), ``hidden``
[d]; the Lagrange multipliers ``lambda_1``, ``lambda_2``; CoFi's expected size
(:meth:`CoFiMasks.expected_size`), Lagrangian (:meth:`CoFiMasks.lagrangian`) and deterministic
masks (:meth:`CoFiMasks.deterministic_masks`). :meth:`CoFiMasks.attach` installs the hooks
(:mod:`.cofi_hooks`); :func:`neuroprune_fairseq.hf.cofi_prune.apply_cofi_masks_` removes the
masked units physically; :mod:`.cofi_train` is the training loop.

CoFi's constants, kept: stretch limits (-0.1, 1.1), temperature 2/3, ``droprate_init`` 0.5
(intermediate log-alphas start at log(1-0.5)-log(0.5) = 0, the others at 10, std 0.01), the
deterministic masks' ``magical_number`` 0.8, and its size bookkeeping: a head costs
``(4 d^2 + 4 d) // H`` parameters (q, k, v, out weights and biases), spread over the hidden
dimensions, an FFN dimension 2 per hidden dimension (fc1, fc2 weights), and the prunable size
is ``L (H * that + 2 d F + 5 d)`` (CoFi's ``params_per_mlp_layer``), so all-ones masks give an
expected sparsity of ``5 d L / size`` rather than 0, as in CoFi. Our choice where CoFi differs
from itself: the kept hidden dimensions' deterministic mask is 1 (CoFi's is sigmoid(0.8
log_alpha / T), which its ``update_params`` folds into the weights only approximately, the
LayerNorms being in between); the others keep CoFi's soft values, folded exactly.
Targets are fractions in [0, 1) (CoFi's ``--target_sparsity 0.95``).
"""
import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cofi_sites import CoFiStructure, cofi_structure

LIMIT_A, LIMIT_B, EPS = -0.1, 1.1, 1e-6
TYPES = ("head", "head_layer", "intermediate", "mlp", "hidden")

__all__ = ["CoFiMasks", "TYPES", "check_target"]


def check_target(target: float) -> float:
    """``target`` as a float in [0, 1), or a ValueError saying so (percent is not accepted)."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 <= float(target) < 1.0:
        raise ValueError(f"CoFi target sparsity must be a fraction in [0, 1) (e.g. 0.9 for 90%), got {target!r}")
    return float(target)


class CoFiMasks(nn.Module):
    """CoFi's L0 masks for ``model`` (dense, BERT family). ``types``: a subset of :data:`TYPES`
    (a type left out is a mask fixed at 1). ``target``: the final target sparsity (a fraction),
    reached linearly over ``warmup_steps`` pruning steps from ``start`` (CoFi's
    ``lagrangian_warmup`` and ``start_sparsity``)."""

    def __init__(self, model: nn.Module, target: float = 0.5, warmup_steps: int = 0, start: float = 0.0,
                 types: Sequence[str] = TYPES, temperature: float = 2.0 / 3.0, droprate_init: float = 0.5,
                 magical_number: float = 0.8):
        super().__init__()
        bad = [t for t in types if t not in TYPES]
        if bad or not types:
            raise ValueError(f"CoFi mask types must be a non-empty subset of {TYPES}, got {list(types)}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        s: CoFiStructure = cofi_structure(model)
        self.structure = s
        self.types = tuple(t for t in TYPES if t in types)
        self.target, self.start = check_target(target), check_target(start)
        self.warmup_steps = int(warmup_steps)
        self.temperature, self.magical_number = float(temperature), float(magical_number)
        L, H, d, Fd = s.num_layers, s.heads, s.hidden, s.intermediate
        self.params_per_head = (4 * d * d + 4 * d) // H
        self.params_per_mlp_layer = 2 * d * Fd + d + 4 * d
        self.prunable_size = L * H * self.params_per_head + L * self.params_per_mlp_layer
        shapes = {"head": (L, H), "head_layer": (L,), "intermediate": (L, Fd), "mlp": (L,), "hidden": (d,)}
        int_mean = math.log(1 - droprate_init) - math.log(droprate_init)
        self.log_alpha = nn.ParameterDict({
            t: nn.Parameter(torch.empty(shapes[t]).normal_(int_mean if t == "intermediate" else 10.0, 1e-2))
            for t in self.types})
        self.shapes = shapes
        self.lambda_1 = nn.Parameter(torch.tensor(0.0))
        self.lambda_2 = nn.Parameter(torch.tensor(0.0))
        self.fixed: Optional[Dict[str, Tensor]] = None
        self.current: Optional[Dict[str, Tensor]] = None
        self.handles = []

    def _ones(self, t: str) -> Tensor:
        return torch.ones(self.shapes[t], device=self.lambda_1.device)

    # ----------------------------------------------------------------- parameter groups
    def mask_parameters(self):
        return list(self.log_alpha.values())

    def lagrangian_parameters(self):
        return [self.lambda_1, self.lambda_2]

    # ------------------------------------------------------------------- hard concrete
    def prob_nonzero(self, t: str) -> Tensor:
        """``1 - Q(z <= 0)``: CoFi's ``1 - cdf_qz(0, log_alpha)`` (clamped to [eps, 1 - eps]);
        ones for a type not masked."""
        if t not in self.log_alpha:
            return self._ones(t)
        xn = (0 - LIMIT_A) / (LIMIT_B - LIMIT_A)
        logits = math.log(xn) - math.log(1 - xn)
        cdf = torch.sigmoid(logits * self.temperature - self.log_alpha[t]).clamp(min=EPS, max=1 - EPS)
        return 1 - cdf

    def sample(self, t: str) -> Tensor:
        """A training-time mask: the stretched concrete sample, clipped to [0, 1]."""
        la = self.log_alpha[t]
        u = torch.empty_like(la).uniform_(EPS, 1 - EPS)
        y = torch.sigmoid((torch.log(u) - torch.log(1 - u) + la) / self.temperature)
        return F.hardtanh(y * (LIMIT_B - LIMIT_A) + LIMIT_A, min_val=0.0, max_val=1.0)

    def _deterministic(self, t: str, la: Tensor, p: Tensor) -> Tensor:
        """CoFi's ``_deterministic_z`` for one row: the round(expected zeros) lowest-scored units
        are 0, the others ``sigmoid(log_alpha / T * 0.8)`` (hidden: 1, see the module doc)."""
        num_zeros = round(la.numel() - float(p.sum()))
        score = torch.sigmoid(la / self.temperature * self.magical_number)
        soft = torch.ones_like(score) if t == "hidden" else score.clone()
        if num_zeros > 0:
            soft[torch.topk(score, num_zeros, largest=False).indices] = 0.0
        return soft

    @torch.no_grad()
    def deterministic_masks(self) -> Dict[str, Tensor]:
        """The eval-time masks of every type (ones for a type not masked): per layer for
        ``head`` / ``intermediate``, per element for ``head_layer`` / ``mlp`` (a layer is
        dropped when its probability of being non-zero is below 1/2), over all for ``hidden``."""
        out = {}
        for t in TYPES:
            if t not in self.log_alpha:
                out[t] = self._ones(t)
                continue
            la, p = self.log_alpha[t].detach().float(), self.prob_nonzero(t).detach()
            if t in ("head", "intermediate"):
                out[t] = torch.stack([self._deterministic(t, la[i], p[i]) for i in range(la.shape[0])])
            elif t in ("head_layer", "mlp"):
                out[t] = torch.stack([self._deterministic(t, la[i:i + 1], p[i:i + 1])[0] for i in range(la.shape[0])])
            else:
                out[t] = self._deterministic(t, la, p)
        return out

    def masks(self, training: bool) -> Dict[str, Tensor]:
        """The masks of one forward pass: ``fixed`` when set, else sampled (training) or
        deterministic (eval)."""
        if self.fixed is not None:
            return {t: self.fixed.get(t, self._ones(t)) for t in TYPES}
        if not training:
            return self.deterministic_masks()
        return {t: self.sample(t) if t in self.log_alpha else self._ones(t) for t in TYPES}

    # ------------------------------------------------------------------ expected sparsity
    def expected_size(self) -> Tensor:
        """CoFi's expected remaining prunable parameters (``get_num_parameters_and_constraint_for_hidden``):
        ``sum_{i,l,h} p_hidden[i] p_mha[l] p_head[l,h] * params_per_head / d
        + sum_{i,l,f} p_hidden[i] p_mlp[l] p_int[l,f] * 2``."""
        p = {t: self.prob_nonzero(t) for t in TYPES}
        heads = (p["head_layer"].unsqueeze(-1) * p["head"]).reshape(-1)
        ints = (p["mlp"].unsqueeze(-1) * p["intermediate"]).reshape(-1)
        hidden = p["hidden"]
        d = self.structure.hidden
        return (torch.outer(hidden, heads).sum() * self.params_per_head / d
                + torch.outer(hidden, ints).sum() * 2)

    def expected_sparsity(self) -> Tensor:
        return 1 - self.expected_size() / self.prunable_size

    def target_at(self, step: int) -> float:
        """CoFi's ``get_target_sparsity``: linear from ``start`` to ``target`` over the warm-up."""
        if self.warmup_steps <= 0:
            return self.target
        return (self.target - self.start) * min(1.0, step / self.warmup_steps) + self.start

    def lagrangian(self, step: int, target: Optional[float] = None):
        """CoFi's ``lagrangian_regularization``: ``(lambda_1 (s - t) + lambda_2 (s - t)^2, s, t)``
        with ``s`` the expected sparsity and ``t`` the target at ``step`` (or ``target``). The
        masks minimise it, the lambdas maximise it (:mod:`.cofi_train`)."""
        t = self.target_at(step) if target is None else check_target(target)
        s = self.expected_sparsity()
        return self.lambda_1 * (s - t) + self.lambda_2 * (s - t) ** 2, s, t

    @staticmethod
    @torch.no_grad()
    def remaining_size(zs: Dict[str, Tensor], head_dim: int) -> int:
        """CoFi's ``calculate_model_size``: the q/k/v/out and fc1/fc2 weights left by masks
        ``zs`` (a unit counts when its mask is non-zero)."""
        hidden = (zs["hidden"] > 0).float()
        heads = ((zs["head"] > 0) & (zs["head_layer"] > 0).unsqueeze(-1)).float().reshape(-1)
        ints = ((zs["intermediate"] > 0) & (zs["mlp"] > 0).unsqueeze(-1)).float().reshape(-1)
        return int(torch.outer(heads, hidden).sum()) * head_dim * 4 + int(torch.outer(ints, hidden).sum()) * 2

    # --------------------------------------------------------------------------- hooks
    def attach(self, model: nn.Module) -> "CoFiMasks":
        """Install the mask hooks on ``model`` (the model the masks were built for)."""
        from .cofi_hooks import install_hooks

        if self.handles:
            raise RuntimeError("CoFi masks are already attached; detach() first")
        self.to(next(model.parameters()).device)  # before building the optimizers over the masks
        self.handles = install_hooks(model, self)
        return self

    def detach(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        self.current = None
