"""Synthetic supervised tasks for checking the meta-gradient estimators (the rank-one matrix factorisation
of Fallah (2019), "On Theory of Model-Agnostic Meta-Learning Algorithms").

Rank-one matrix factorisation: task i's loss is ``f_i(x) = 1/4 ||x x^T - g_i g_i^T||_F^2`` with
``g_i`` Gaussian (its spread sets how similar the tasks are). In ascent form ``J_i = -f_i``.
Noisy gradients and Hessians, as in Fallah's (2019) experiment, come from a random linear-quadratic
term added to the objective: ``S(x; D) = J(x) + <xi, x> + 1/2 x^T Xi x`` with ``xi`` and the
symmetric ``Xi`` zero-mean Gaussian, so ``grad S = grad J + xi + Xi x`` and
``hess S = hess J + Xi``: unbiased, with standard deviation ``sigma_g`` per gradient entry and
``sigma_h`` per off-diagonal Hessian entry (``sqrt(2) sigma_h`` on the diagonal).
"""

from __future__ import annotations

import torch
from torch import Tensor

from metarl.params import Params


def factorisation_objective(x: Tensor, g: Tensor) -> Tensor:
    """``-1/4 ||x x^T - g g^T||_F^2`` per row of ``x`` and ``g`` (any leading shape)."""
    residual = x.unsqueeze(-1) * x.unsqueeze(-2) - g.unsqueeze(-1) * g.unsqueeze(-2)
    return -0.25 * (residual**2).sum((-1, -2))


class MatrixFactorisationOracle:
    """A task-batched oracle (``task_axis = True``) over the rank-one factorisation tasks ``g``.

    Args:
        g: the tasks' vectors, shape (B, d); params ``{"x": (B, d)}`` carry one point per task.
        sigma_g: standard deviation of the gradient noise (0 for exact gradients).
        sigma_h: standard deviation of the Hessian noise (0 for exact Hessians).
        seed: seeds the noise; every ``sample`` call draws fresh noise.
    """

    task_axis = True

    def __init__(self, g: Tensor, sigma_g: float = 0.0, sigma_h: float = 0.0, seed: int = 0) -> None:
        if g.dim() != 2:
            raise ValueError(f"g must have shape (tasks, d); got {tuple(g.shape)}")
        if sigma_g < 0 or sigma_h < 0:
            raise ValueError(f"noise scales must be >= 0; got sigma_g={sigma_g}, sigma_h={sigma_h}")
        self.g, self.sigma_g, self.sigma_h = g, sigma_g, sigma_h
        self.generator = torch.Generator().manual_seed(seed)

    def exact_objective(self, params: Params) -> Tensor:
        """J per task, shape (B,)."""
        return factorisation_objective(params["x"], self.g)

    def sample(self, params: Params) -> dict[str, Tensor]:
        tasks, d = self.g.shape
        xi = self.sigma_g * torch.randn((tasks, d), generator=self.generator, dtype=self.g.dtype)
        a = self.sigma_h * torch.randn((tasks, d, d), generator=self.generator, dtype=self.g.dtype)
        return {"xi": xi, "Xi": (a + a.transpose(-1, -2)) / 2**0.5}

    def objective(self, params: Params, batch: dict[str, Tensor]) -> Tensor:
        x = params["x"]
        noise = (batch["xi"] * x).sum(-1) + 0.5 * torch.einsum("ri,rij,rj->r", x, batch["Xi"], x)
        return (self.exact_objective(params) + noise).sum()
