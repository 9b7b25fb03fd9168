"""Problems whose objective, gradient and MAML meta-gradient are known in closed form.

Each oracle carries R independent replicas of the same task along a task axis, so one call to
the estimators yields R independent estimates (their mean and standard error are compared
with the exact value).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Params = dict[str, Tensor]


class GaussianBandit:
    """One-step task: a ~ N(mu, diag(exp(2 s))), reward -||a - g||^2.

    ``J(mu, s) = -||mu - g||^2 - sum(exp(2 s))``: its Hessian depends on s (not constant).
    The oracle's objective is the DiCE surrogate ``mean_j r_j exp(l_j(theta) - l_j(theta_b))``,
    unbiased for J's gradient and Hessian at the sampling parameters and the importance-sampled
    estimate elsewhere.
    """

    task_axis = True

    def __init__(self, goal: Tensor, replicas: int, samples: int, seed: int, surrogate: str = "dice") -> None:
        self.goal, self.replicas, self.samples = goal, replicas, samples
        self.surrogate = surrogate
        self.generator = torch.Generator().manual_seed(seed)

    @staticmethod
    def exact_objective(params: Params, goal: Tensor) -> Tensor:
        return -((params["mu"] - goal) ** 2).sum(-1) - torch.exp(2 * params["s"]).sum(-1)

    def log_prob(self, params: Params, actions: Tensor) -> Tensor:
        mu, s = params["mu"].unsqueeze(1), params["s"].unsqueeze(1)
        z = (actions - mu) * torch.exp(-s)
        return (-0.5 * z**2 - s - 0.5 * math.log(2 * math.pi)).sum(-1)

    def sample(self, params: Params) -> dict[str, Tensor]:
        mu, s = params["mu"], params["s"]
        noise = torch.randn((self.replicas, self.samples, mu.shape[-1]), generator=self.generator, dtype=mu.dtype)
        actions = mu.unsqueeze(1) + torch.exp(s).unsqueeze(1) * noise
        rewards = -((actions - self.goal) ** 2).sum(-1)
        return {"actions": actions, "rewards": rewards, "old_log_probs": self.log_prob(params, actions)}

    def objective(self, params: Params, batch: dict[str, Tensor]) -> Tensor:
        log_probs = self.log_prob(params, batch["actions"])
        if self.surrogate == "reinforce":
            return (log_probs * batch["rewards"]).mean(1).sum()
        return (torch.exp(log_probs - batch["old_log_probs"]) * batch["rewards"]).mean(1).sum()


def exact_maml_gradient(objective, params: Params, alpha: float, steps: int, first_order: bool = False) -> Params:
    """Gradient of ``J(theta_N)`` with ``theta_{k+1} = theta_k + alpha grad J(theta_k)``, by
    autograd through the closed form (or ``grad J(theta_N)`` when ``first_order``)."""
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    current = dict(theta)
    for _ in range(steps):
        grads = torch.autograd.grad(objective(current), list(current.values()), create_graph=True)
        current = {k: v + alpha * g for (k, v), g in zip(current.items(), grads)}
    if first_order:
        current = {k: v.detach().requires_grad_(True) for k, v in current.items()}
        return dict(zip(current, torch.autograd.grad(objective(current), list(current.values()))))
    return dict(zip(theta, torch.autograd.grad(objective(current), list(theta.values()))))
