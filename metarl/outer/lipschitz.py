"""Online estimates of the smoothness constants L and rho that the adaptive step size needs.

The step size of Fallah, Mokhtari & Ozdaglar (2020, https://arxiv.org/abs/1908.10400),
``beta = c / L~``, uses L (the task gradients are L-Lipschitz) and rho (the task Hessians are
rho-Lipschitz). When the user cannot give them, they are estimated from
secants taken on *common data*: one batch D drawn at theta serves both end points of a segment
[theta', theta], so the difference measures curvature and not sampling noise::

    L_hat   = || grad S(theta; D) - grad S(theta'; D) || / || theta - theta' ||
    rho_hat = || H(theta; D) u - H(theta'; D) u ||     / || theta - theta' ||, u = (theta - theta') / ||theta - theta'||

theta' is the previous meta-iterate (the segment the outer step just travelled) or, at the first
estimate, a probe point a short distance back along the gradient. For RL the surrogate at theta'
must be the importance-weighted one (``dice``), as for HF-MAML's finite difference.

Secants are lower bounds of the suprema L and rho along the path, so the estimate is the running
maximum over tasks and iterations (and over the user's starting values, when given): it only
grows, which keeps the step size on the safe side of the theory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from metarl.estimators.meta_gradient import TaskOracle, exact_hvp, gradient_of
from metarl.params import Params, as_leaves, tree_axpy, tree_norm, tree_scale


@dataclass(frozen=True)
class Secants:
    """Per-task secant estimates along one segment."""

    smoothness: Tensor  # ||grad S(theta) - grad S(theta')|| / ||theta - theta'||
    rho: Tensor  # ||H(theta) u - H(theta') u|| / ||theta - theta'||


def secants(oracle: TaskOracle, theta: Params, previous: Params, batch: Any) -> Secants:
    """Secant estimates of L and rho on the segment [previous, theta], both ends on ``batch``.

    Works per task when the oracle has a task axis (then every task needs its own segment).
    """
    task_axis = bool(getattr(oracle, "task_axis", False))
    delta = {k: (theta[k] - previous[k]).detach() for k in theta}
    length = tree_norm(delta, task_axis)
    if bool((length == 0).any()):
        raise ValueError("secants need two distinct points: theta equals previous (for some task)")
    direction = tree_scale(delta, 1.0 / length, task_axis)
    gradients, products = [], []
    for point in (theta, previous):
        leaf = as_leaves(point)
        grad = gradient_of(oracle, leaf, batch, create_graph=True)
        products.append(exact_hvp(leaf, grad, direction))
        gradients.append({k: g.detach() for k, g in grad.items()})
    grad_change = tree_norm({k: gradients[0][k] - gradients[1][k] for k in theta}, task_axis)
    hvp_change = tree_norm({k: products[0][k] - products[1][k] for k in theta}, task_axis)
    return Secants(grad_change / length, hvp_change / length)


class OnlineLipschitz:
    """Running-maximum estimates of L and rho from secants on common data.

    Args:
        smoothness: a known lower bound for L to start from (``None``: from the first secant).
        rho: likewise for rho.
        probe_radius: length of the probe segment used for the first estimate, taken back along
            the gradient from the current point.
    """

    def __init__(self, smoothness: float | None = None, rho: float | None = None, probe_radius: float = 1e-2) -> None:
        if not probe_radius > 0:
            raise ValueError(f"probe_radius = {probe_radius}: must be > 0")
        self.smoothness = smoothness
        self.rho = rho
        self.probe_radius = probe_radius
        self.previous: Params | None = None

    @property
    def ready(self) -> bool:
        return self.smoothness is not None and self.rho is not None

    def update(self, oracle: TaskOracle, theta: Params, batch: Any, gradient: Params) -> tuple[float, float]:
        """Fold in the secants between the previous point and ``theta`` on ``batch`` (drawn at
        ``theta``); ``gradient`` is ``grad S(theta; batch)``, used for the probe when there is no
        usable previous point. Returns the updated (L, rho)."""
        task_axis = bool(getattr(oracle, "task_axis", False))
        previous = None if self.previous is None else {k: v.to(theta[k].device) for k, v in self.previous.items()}
        if previous is None or _same_point(previous, theta):
            previous = self._probe_point(theta, gradient, task_axis)
        estimate = secants(oracle, theta, previous, batch)
        sample_l, sample_rho = float(estimate.smoothness.max()), float(estimate.rho.max())
        if not (torch.isfinite(estimate.smoothness).all() and torch.isfinite(estimate.rho).all()):
            raise FloatingPointError("a secant estimate of L or rho is not finite")
        self.smoothness = sample_l if self.smoothness is None else max(self.smoothness, sample_l)
        self.rho = sample_rho if self.rho is None else max(self.rho, sample_rho)
        self.previous = {k: v.detach().clone() for k, v in theta.items()}
        return self.smoothness, self.rho

    def _probe_point(self, theta: Params, gradient: Params, task_axis: bool) -> Params:
        norm = tree_norm(gradient, task_axis)
        norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        return tree_axpy({k: v.detach() for k, v in theta.items()}, -self.probe_radius / norm, gradient, task_axis)

    def state_dict(self) -> dict[str, Any]:
        return {"smoothness": self.smoothness, "rho": self.rho, "previous": self.previous}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.smoothness, self.rho, self.previous = state["smoothness"], state["rho"], state["previous"]


def _same_point(a: Params, b: Params) -> bool:
    return all(a[k].shape == b[k].shape and torch.equal(a[k], b[k].detach()) for k in b)
