"""Outer (meta) updates: SGD with a fixed step, SGD with the adaptive step of Fallah et al.,
and Adam. All take the averaged *ascent* direction and update the parameters in place.

A TRPO update plugs in here as another :class:`OuterOptimizer`: ``step`` receives the
meta-gradient estimate (adapted parameters, batches) it needs for its trust region.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch

from metarl.meta import MetaGradient
from metarl.policies import Params

# Seed 002 (Fallah et al., Theorems 4.8, 4.15, 4.17): beta = c / L~(theta).
ADAPTIVE_STEP_CONSTANTS = {"maml": 1 / 12, "fomaml": 1 / 18, "hfmaml": 1 / 25}


class OuterOptimizer(ABC):
    """Updates the meta-parameters from the averaged meta-gradient (ascent direction)."""

    @abstractmethod
    def step(self, params: Params, direction: Params, estimate: MetaGradient | None = None) -> dict[str, float]:
        """Update ``params`` in place; return statistics to log (at least ``step_size``)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class SGD(OuterOptimizer):
    """``theta <- theta + lr * direction``."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def step(self, params: Params, direction: Params, estimate: MetaGradient | None = None) -> dict[str, float]:
        with torch.no_grad():
            for k in params:
                params[k].add_(direction[k], alpha=self.lr)
        return {"step_size": self.lr}


class AdaptiveSGD(OuterOptimizer):
    """SGD with ``beta = c / L~(theta)``, ``L~ = 4 L + 2 rho alpha mean_j ||grad S_j(theta)||``.

    The gradient norms are those of the inner step's first gradients of the meta-batch's tasks.

    Args:
        c: the constant (1/12 for MAML, 1/18 for FO-MAML, 1/25 for HF-MAML).
        smoothness: L, the Lipschitz constant of the task gradients.
        rho: the Lipschitz constant of the task Hessians.
        inner_lr: the inner step alpha.
    """

    def __init__(self, c: float, smoothness: float, rho: float, inner_lr: float) -> None:
        self.c, self.smoothness, self.rho, self.inner_lr = c, smoothness, rho, inner_lr

    def step(self, params: Params, direction: Params, estimate: MetaGradient | None = None) -> dict[str, float]:
        if estimate is None:
            raise ValueError("the adaptive step size needs the meta-gradient estimate (gradient norms)")
        mean_grad_norm = float(estimate.inner_grad_norm.float().mean())
        lipschitz = 4 * self.smoothness + 2 * self.rho * self.inner_lr * mean_grad_norm
        beta = self.c / lipschitz
        with torch.no_grad():
            for k in params:
                params[k].add_(direction[k], alpha=beta)
        return {"step_size": beta, "lipschitz_estimate": lipschitz}


class Adam(OuterOptimizer):
    """Adam ascent on the meta-objective (``torch.optim.Adam`` with ``maximize=True``)."""

    def __init__(self, params: Params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.lr = lr
        self.optimizer = torch.optim.Adam(list(params.values()), lr=lr, betas=betas, eps=eps, maximize=True)

    def step(self, params: Params, direction: Params, estimate: MetaGradient | None = None) -> dict[str, float]:
        for k, p in params.items():
            p.grad = direction[k].detach().clone()
        self.optimizer.step()
        for p in params.values():
            p.grad = None
        return {"step_size": self.lr}

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
