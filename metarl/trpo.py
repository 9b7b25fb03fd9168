"""TRPO as the outer (meta) update, as in MAML-RL (Finn et al. 2017).

The trust region is measured on the *post-adaptation* policies of the meta-batch. With ``g`` the
averaged meta-gradient from any estimator (MAML, FO-MAML, HF-MAML) and ``F`` the Fisher matrix
of the adapted policies on their episodes D_out, pulled back to the meta-parameters through the
adaptation (``J^T F J``, ``J = prod_k (I + alpha H_k)``; see :class:`MetaFisher`)::

    s = F^{-1} g                         (conjugate gradient on Fisher-vector products)
    step = sqrt(2 max_kl / s^T F s) * s
    theta_new = theta + 0.8^j * step,    the first j whose re-adapted policies improve the
                                         surrogate on D_out and stay within max_kl of the old ones

Re-adaptation at a candidate theta_new replays the inner steps on the stored inner batches
(importance-weighted surrogate, no new rollouts). Fisher-vector products are exact second
derivatives of the mean KL and of the inner steps (double backward), never a dense matrix. The
metric uses exact Hessian-vector products whatever the estimator of ``g``: the adaptation can
amplify a meta-step many times (``alpha H`` is large early in training), so a metric without ``J``
makes the line search reject every step.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from metarl.meta import MetaGradient, _gradient, _leaf, adapt_on
from metarl.outer import OuterOptimizer
from metarl.policies import Params


class TrustRegionOracle(Protocol):
    """A task-batched oracle that can also measure the KL between two parameter sets."""

    task_axis: bool

    def objective(self, params: Params, batch: Any) -> Tensor: ...

    def ratio_objective(self, params: Params, batch: Any) -> Tensor:
        """The per-step importance-ratio surrogate, summed over tasks (what the line search improves)."""

    def kl(self, old: Params, new: Params, batch: Any) -> Tensor:
        """Mean KL(pi_old || pi_new) over the batch's steps, per task (shape (B,))."""


def conjugate_gradient(matvec: Callable[[Tensor], Tensor], b: Tensor, iterations: int = 10,
                       tolerance: float = 1e-10) -> Tensor:
    """Approximately solve ``A x = b`` for symmetric positive-definite ``A`` given as ``matvec``."""
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = b.clone()
    residual_sq = residual @ residual
    for _ in range(iterations):
        if residual_sq <= tolerance:
            break
        product = matvec(direction)
        step = residual_sq / (direction @ product)
        x += step * direction
        residual -= step * product
        new_residual_sq = residual @ residual
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return x


def _flatten(tree: Params) -> Tensor:
    return torch.cat([v.reshape(-1) for v in tree.values()])


def _unflatten(flat: Tensor, like: Params) -> Params:
    out, start = {}, 0
    for k, v in like.items():
        out[k] = flat[start:start + v.numel()].view_as(v)
        start += v.numel()
    return out


def _stack(params: Params, tasks: int) -> Params:
    return {k: v.detach().unsqueeze(0).expand(tasks, *v.shape).contiguous() for k, v in params.items()}


class MetaFisher:
    """``v -> mean_i J_i^T F_i J_i v + damping v``: the Fisher of the adapted policies pulled back
    to the meta-parameters through the adaptation's Jacobian ``J_i = prod_k (I + alpha H_ik)``.

    The inner steps are replayed once on their batches with graphs kept, and the KL's gradient at
    the adapted parameters once with its graph; every product then costs backward passes only.
    """

    def __init__(self, oracle: TrustRegionOracle, params: Params, estimate: MetaGradient, inner_lr: float,
                 damping: float) -> None:
        self.params, self.inner_lr, self.damping = params, inner_lr, damping
        self.tasks = next(iter(estimate.adapted.values())).shape[0]
        self.points: list[Params] = []
        self.gradients: list[Params] = []
        theta = _stack(params, self.tasks)
        for batch in estimate.inner_batches:
            leaf = _leaf(theta)
            grad = _gradient(oracle, leaf, batch, create_graph=True)
            self.points.append(leaf)
            self.gradients.append(grad)
            theta = {k: leaf[k].detach() + inner_lr * grad[k].detach() for k in leaf}
        self.adapted = _leaf(estimate.adapted)
        kl = oracle.kl({k: v.detach() for k, v in estimate.adapted.items()}, self.adapted, estimate.outer_batch).mean()
        self.kl_gradient = torch.autograd.grad(kl, list(self.adapted.values()), create_graph=True)

    @staticmethod
    def _product(point: Params, gradient: Any, vector: Params) -> Params:
        """Second derivative along ``vector`` of the function whose gradient graph is ``gradient``."""
        values = gradient.values() if isinstance(gradient, dict) else gradient
        inner = sum((g * vector[k]).sum() for g, k in zip(values, point))
        products = torch.autograd.grad(inner, list(point.values()), retain_graph=True, allow_unused=True)
        return {k: torch.zeros_like(p) if h is None else h for (k, p), h in zip(point.items(), products)}

    def _jacobian(self, vector: Params, transpose: bool) -> Params:
        order = range(len(self.points))
        for k in (reversed(order) if transpose else order):
            hvp = self._product(self.points[k], self.gradients[k], vector)
            vector = {name: vector[name] + self.inner_lr * hvp[name] for name in vector}
        return vector

    def __call__(self, flat: Tensor) -> Tensor:
        tangent = {k: v.contiguous() for k, v in _stack(_unflatten(flat, self.params), self.tasks).items()}
        pushed = self._jacobian(tangent, transpose=False)
        fisher = self._product(self.adapted, self.kl_gradient, pushed)
        pulled = self._jacobian(fisher, transpose=True)
        return _flatten({k: v.sum(0) for k, v in pulled.items()}).detach() + self.damping * flat


class TRPO(OuterOptimizer):
    """Trust-region meta-update on the post-adaptation policies.

    Args:
        inner_lr: the inner step alpha (to re-adapt candidate parameters).
        inner_steps: N, the number of inner steps.
        max_kl: the trust region's radius in mean KL.
        cg_iterations: conjugate-gradient iterations.
        cg_damping: ``F + damping * I`` is inverted.
        line_search_steps: candidate step fractions tried, ``ratio^0 .. ratio^(steps-1)``.
        line_search_ratio: shrink factor between candidates.
    """

    def __init__(self, inner_lr: float, inner_steps: int = 1, max_kl: float = 0.01, cg_iterations: int = 10,
                 cg_damping: float = 1e-5, line_search_steps: int = 15, line_search_ratio: float = 0.8) -> None:
        self.inner_lr, self.inner_steps = inner_lr, inner_steps
        self.max_kl, self.cg_iterations, self.cg_damping = max_kl, cg_iterations, cg_damping
        self.line_search_steps, self.line_search_ratio = line_search_steps, line_search_ratio

    def step(self, params: Params, direction: Params, estimate: MetaGradient | None = None) -> dict[str, float]:
        if estimate is None or estimate.oracle is None:
            raise ValueError("TRPO needs the meta-gradient estimate (its oracle, adapted parameters and batches)")
        gradient = _flatten(direction)
        metric = MetaFisher(estimate.oracle, params, estimate, self.inner_lr, self.cg_damping)
        search = conjugate_gradient(metric, gradient, self.cg_iterations)
        curvature = search @ metric(search)
        if not torch.isfinite(curvature) or curvature <= 0:
            return {"step_size": 0.0, "step_norm": 0.0, "kl": 0.0, "improvement": 0.0, "line_search_steps": 0,
                    "accepted": False}
        full_step = torch.sqrt(2 * self.max_kl / curvature) * search
        return self._line_search(estimate.oracle, params, full_step, estimate, gradient)

    def _line_search(self, oracle: TrustRegionOracle, params: Params, full_step: Tensor, estimate: MetaGradient,
                     gradient: Tensor) -> dict[str, float]:
        tasks = next(iter(estimate.adapted.values())).shape[0]
        old_flat = _flatten(params).detach()
        with torch.no_grad():
            old_value = oracle.ratio_objective(estimate.adapted, estimate.outer_batch) / tasks
        for j in range(self.line_search_steps):
            fraction = self.line_search_ratio**j
            candidate = _unflatten(old_flat + fraction * full_step, params)
            adapted = adapt_on(oracle, _stack(candidate, tasks), estimate.inner_batches, self.inner_lr)
            with torch.no_grad():
                improvement = oracle.ratio_objective(adapted, estimate.outer_batch) / tasks - old_value
                kl = oracle.kl(estimate.adapted, adapted, estimate.outer_batch).mean()
            if torch.isfinite(improvement) and improvement > 0 and kl <= self.max_kl:
                with torch.no_grad():
                    for k in params:
                        params[k].copy_(candidate[k])
                step_norm = float(fraction * full_step.norm())
                return {"step_size": step_norm / max(float(gradient.norm()), 1e-12), "step_norm": step_norm,
                        "kl": float(kl), "improvement": float(improvement), "line_search_steps": j + 1,
                        "accepted": True}
        return {"step_size": 0.0, "step_norm": 0.0, "kl": 0.0, "improvement": 0.0,
                "line_search_steps": self.line_search_steps, "accepted": False}
