"""Problems whose objective, gradient and MAML meta-gradient are known in closed form.

Each oracle carries R independent replicas of the same task along a task axis, so one call to
the estimators yields R independent estimates (their mean and standard error are compared
with the exact value).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from metarl.rl.oracles import episode_log_probs
from metarl.rl.policies import GaussianMLPPolicy
from metarl.rl.returns import discount_weights, discounted_returns
from metarl.rl.sampling import Episodes
from metarl.rl.surrogates import SURROGATES, PolicyGradientBatch

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


class LinearQuadraticControl:
    """A small linear-quadratic control problem with a linear Gaussian policy, over T steps.

    ``x_0 ~ N(m_0, P_0)``, ``a_t ~ N(K x_t + k, diag(exp(2 s)))``, ``x_{t+1} = A x_t + B a_t``,
    ``r_t = -(x_t^T Q x_t + a_t^T R a_t)``, ``J = E[sum_t gamma^t r_t]``. Later rewards depend on
    earlier actions, so the score terms of a multi-step episode matter for the Hessian.

    The policy is metarl's :class:`GaussianMLPPolicy` without hidden layers (params
    ``mean_net.0.weight`` = K, ``mean_net.0.bias`` = k, ``log_std`` = s); the oracle builds
    metarl :class:`Episodes` and evaluates metarl's own returns and surrogates on them, as the RL
    oracle does. The baseline ``b_t = E[R_t]`` at the sampling parameters (exact) depends on t
    only, so it reduces variance without biasing anything.

    The state stays Gaussian, so J follows in closed form from its mean and covariance.
    """

    task_axis = True

    def __init__(self, replicas: int, episodes: int, seed: int, surrogate: str = "dice",
                 horizon: int = 4, gamma: float = 0.9) -> None:

        dtype = torch.float64
        self.A = torch.tensor([[1.0, 0.3], [0.0, 0.9]], dtype=dtype)
        self.B = torch.tensor([[0.0], [0.5]], dtype=dtype)
        self.Q = torch.eye(2, dtype=dtype)
        self.R = torch.tensor([[0.5]], dtype=dtype)
        self.m0 = torch.tensor([1.0, -0.5], dtype=dtype)
        self.P0 = 0.05 * torch.eye(2, dtype=dtype)
        self.horizon, self.gamma = horizon, gamma
        self.replicas, self.episodes = replicas, episodes
        self.surrogate = SURROGATES[surrogate]
        self.policy = GaussianMLPPolicy(2, 1, hidden_sizes=()).to(dtype)
        self.generator = torch.Generator().manual_seed(seed)

    def expected_costs(self, params: Params) -> Tensor:
        """``E[x_t^T Q x_t + a_t^T R a_t]`` for t = 0..T-1, shape (T, *batch) for params with any
        leading batch shape."""
        K, k, s = params["mean_net.0.weight"], params["mean_net.0.bias"], params["log_std"]
        batch = s.shape[:-1]
        mean = self.m0.expand(*batch, 2)
        cov = self.P0.expand(*batch, 2, 2)
        action_cov = torch.diag_embed(torch.exp(2 * s))
        closed = self.A + self.B @ K
        costs = []
        for _ in range(self.horizon):
            a_mean = (K @ mean.unsqueeze(-1)).squeeze(-1) + k
            a_cov = K @ cov @ K.transpose(-1, -2) + action_cov
            costs.append(_quadratic_expectation(self.Q, mean, cov) + _quadratic_expectation(self.R, a_mean, a_cov))
            mean = (closed @ mean.unsqueeze(-1)).squeeze(-1) + (self.B @ k.unsqueeze(-1)).squeeze(-1)
            cov = closed @ cov @ closed.transpose(-1, -2) + self.B @ action_cov @ self.B.T
        return torch.stack(costs)

    def exact_objective(self, params: Params) -> Tensor:
        discounts = self.gamma ** torch.arange(self.horizon, dtype=torch.float64)
        costs = self.expected_costs(params)
        return -(discounts.view(-1, *[1] * (costs.dim() - 1)) * costs).sum(0)

    def sample(self, params: Params) -> PolicyGradientBatch:

        R, M, T = self.replicas, self.episodes, self.horizon
        dtype = torch.float64
        x = self.m0 + torch.randn((R, M, 2), generator=self.generator, dtype=dtype) @ torch.linalg.cholesky(self.P0).T
        observations, actions, rewards, log_probs = [], [], [], []
        with torch.no_grad():
            for _ in range(T):
                noise = torch.randn((R, M, 1), generator=self.generator, dtype=dtype)
                a, log_prob = self.policy.act(params, x, noise)
                rewards.append(-((x @ self.Q) * x).sum(-1) - ((a @ self.R) * a).sum(-1))
                observations.append(x)
                actions.append(a)
                log_probs.append(log_prob)
                x = x @ self.A.T + a @ self.B.T
            episodes = Episodes(torch.stack(observations), torch.stack(actions), torch.stack(rewards),
                                torch.ones((T, R, M), dtype=dtype), torch.stack(log_probs))
            discounts = discount_weights(T, self.gamma, dtype).view(-1, 1, 1)
            returns = discounted_returns(episodes.rewards, episodes.mask, self.gamma)
            values = self._expected_rewards_to_go(params).unsqueeze(-1).expand(T, R, M)
        return PolicyGradientBatch(episodes, episodes.log_probs, discounts * (returns - values), values, discounts)

    def objective(self, params: Params, batch: PolicyGradientBatch) -> Tensor:

        return self.surrogate(episode_log_probs(self.policy, params, batch.episodes), batch)

    def _expected_rewards_to_go(self, params: Params) -> Tensor:
        """``E[R_t] = -sum_{t' >= t} gamma^(t' - t) E[cost_t']`` per t and replica, shape (T, R)."""
        costs = self.expected_costs(params)
        values = torch.zeros_like(costs)
        running = torch.zeros_like(costs[0])
        for t in reversed(range(self.horizon)):
            running = -costs[t] + self.gamma * running
            values[t] = running
        return values


def _quadratic_expectation(weight: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """``E[y^T W y]`` for ``y ~ N(mean, cov)``: ``mean^T W mean + tr(W cov)``."""
    return ((mean @ weight) * mean).sum(-1) + (weight * cov).sum((-1, -2))
