"""Outer (meta) updates: SGD with a fixed step, SGD with the adaptive step of Fallah, Mokhtari &
Ozdaglar (2020, https://arxiv.org/abs/1908.10400),
and Adam. All take the averaged *ascent* direction and update the parameters in place.

Every step gets what it needs as arguments (:class:`StepInputs`): TRPO the estimate and the
oracle that drew its batches, the adaptive step size a batch of tasks drawn independently of them.
Nothing here calls back into the trainer.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch

from metarl.estimators.meta_gradient import MetaGradient, TaskOracle, objective_gradient
from metarl.outer.lipschitz import OnlineLipschitz
from metarl.params import Params, tree_norm

# Fallah, Mokhtari & Ozdaglar (2020), Theorems 4.8, 4.15, 4.17: beta = c / L~(theta).
ADAPTIVE_STEP_CONSTANTS = {"maml": 1 / 12, "fomaml": 1 / 18, "hfmaml": 1 / 25}


IndependentBatch = tuple[TaskOracle, Params]
"""An oracle over tasks drawn independently of the meta-gradient's, and theta laid out for it."""


@dataclass(frozen=True)
class StepInputs:
    """What an outer step may use besides the direction, handed down by the trainer."""

    estimate: MetaGradient | None = None  # adapted parameters and batches (TRPO re-evaluates on them)
    oracle: TaskOracle | None = None  # the oracle that drew the estimate's batches
    independent: IndependentBatch | None = None  # the adaptive step size's B' tasks


class OuterOptimizer(ABC):
    """Updates the meta-parameters from the averaged meta-gradient (ascent direction)."""

    uses_independent_tasks = False  # whether step needs StepInputs.independent

    @abstractmethod
    def step(self, params: Params, direction: Params, inputs: StepInputs | None = None) -> dict[str, Any]:
        """Update ``params`` in place; return statistics to log (at least ``step_size``, and
        ``skipped: True`` when the optimiser refused to update on non-finite numbers)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional hook: nothing to restore by default)
        pass


class SGD(OuterOptimizer):
    """``theta <- theta + lr * direction``."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def step(self, params: Params, direction: Params, inputs: StepInputs | None = None) -> dict[str, float]:
        with torch.no_grad():
            for k in params:
                params[k].add_(direction[k], alpha=self.lr)
        return {"step_size": self.lr}


class AdaptiveSGD(OuterOptimizer):
    """SGD with ``beta = c / L~(theta)``, ``L~ = 4 L + 2 rho alpha (1/B') sum_j ||grad S_j(theta)||``.

    As in Fallah et al., the gradient norms come from a batch of B' tasks and data drawn
    independently of the ones that produce the meta-gradient, so that the step size and the
    direction are independent: ``StepInputs.independent``, an oracle over such tasks and theta laid
    out for it (one copy per task); this optimiser samples from it once per step (and once more for
    its first online estimate of L and rho, when asked for them before the first step).

    Args:
        c: the constant (1/12 for MAML, 1/18 for FO-MAML, 1/25 for HF-MAML).
        inner_lr: the inner step alpha.
        smoothness: L, the Lipschitz constant of the task gradients (fixed when ``lipschitz`` is
            ``None``; otherwise the estimator's starting value, if any).
        rho: the Lipschitz constant of the task Hessians, likewise.
        lipschitz: an :class:`OnlineLipschitz` that estimates L and rho from secants on the
            independent batch, or ``None`` to use the given constants.
    """

    uses_independent_tasks = True

    def __init__(self, c: float, inner_lr: float, smoothness: float | None = None,
                 rho: float | None = None, lipschitz: OnlineLipschitz | None = None) -> None:
        if lipschitz is None and (smoothness is None or rho is None):
            raise ValueError("AdaptiveSGD needs smoothness and rho, or an OnlineLipschitz estimator")
        self.c, self.inner_lr = c, inner_lr
        self.smoothness, self.rho = smoothness, rho
        self.lipschitz = lipschitz

    def constants(self, independent: IndependentBatch | None = None) -> tuple[float, float]:
        """The current (L, rho); with online estimation and no estimate yet, one is made on the
        ``independent`` batch (required then)."""
        if self.lipschitz is None:
            assert self.smoothness is not None and self.rho is not None
            return self.smoothness, self.rho
        if not self.lipschitz.ready:
            if independent is None:
                raise ValueError("the first online estimate of L and rho needs an independent batch of tasks")
            oracle, theta = independent
            batch = oracle.sample(theta)
            self.lipschitz.update(oracle, theta, batch, objective_gradient(oracle, theta, batch))
        assert self.lipschitz.smoothness is not None and self.lipschitz.rho is not None
        return self.lipschitz.smoothness, self.lipschitz.rho

    def step(self, params: Params, direction: Params, inputs: StepInputs | None = None) -> dict[str, Any]:
        """The update; with a NaN or Inf gradient norm or secant on the independent batch, no update
        (``skipped: True`` in the returned statistics)."""
        if inputs is None or inputs.independent is None:
            raise ValueError("the adaptive step size needs StepInputs.independent, tasks drawn independently")
        oracle, theta = inputs.independent
        batch = oracle.sample(theta)
        gradient = objective_gradient(oracle, theta, batch)
        mean_grad_norm = float(tree_norm(gradient, bool(getattr(oracle, "task_axis", False))).mean())
        if not math.isfinite(mean_grad_norm):
            return {"step_size": 0.0, "skipped": True}
        if self.lipschitz is None:
            smoothness, rho = self.constants()
        else:
            try:
                smoothness, rho = self.lipschitz.update(oracle, theta, batch, gradient)
            except FloatingPointError:
                return {"step_size": 0.0, "skipped": True}
        lipschitz = 4 * smoothness + 2 * rho * self.inner_lr * mean_grad_norm
        beta = self.c / lipschitz
        with torch.no_grad():
            for k in params:
                params[k].add_(direction[k], alpha=beta)
        return {"step_size": beta, "lipschitz_estimate": lipschitz, "smoothness": smoothness, "rho": rho}

    def state_dict(self) -> dict[str, Any]:
        return {"lipschitz": self.lipschitz.state_dict()} if self.lipschitz is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.lipschitz is not None:
            self.lipschitz.load_state_dict(state["lipschitz"])


class Adam(OuterOptimizer):
    """Adam ascent on the meta-objective (``torch.optim.Adam`` with ``maximize=True``).

    With ``anneal_steps``, the step size decays linearly from ``lr`` to 0 over that many updates.
    """

    def __init__(self, params: Params, lr: float, anneal_steps: int | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.optimizer = torch.optim.Adam(list(params.values()), lr=lr, betas=betas, eps=eps, maximize=True)
        decay = (lambda k: max(0.0, 1.0 - k / anneal_steps)) if anneal_steps else (lambda k: 1.0)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, decay)

    def step(self, params: Params, direction: Params, inputs: StepInputs | None = None) -> dict[str, float]:
        if any(p is not q for p, q in zip(params.values(), self.optimizer.param_groups[0]["params"])):
            raise ValueError("Adam updates the tensors it was built with; pass the same params dict")
        step_size = self.schedule.get_last_lr()[0]
        for k, p in params.items():
            p.grad = direction[k].detach().clone()
        self.optimizer.step()
        self.schedule.step()
        for p in params.values():
            p.grad = None
        return {"step_size": step_size}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
