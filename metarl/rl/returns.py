"""Discounted returns, generalised advantage estimation and the linear feature baseline.

All functions take time-major tensors (T, ...) and a mask that is 1.0 on real steps and 0.0
on padding. Episodes end at termination or at the horizon; the horizon is part of the
problem (the return is a finite-horizon sum), so nothing is bootstrapped after the last step.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Ridge = Literal["relative", "absolute"]
RIDGES = ("relative", "absolute")


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """Reward-to-go ``R_t = sum_{t' >= t} gamma^(t'-t) r_t'`` along axis 0."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = (rewards[t] + gamma * running) * mask[t]
        returns[t] = running
    return returns


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> Tensor:
    """Generalised advantage estimates ``A_t = sum_l (gamma lam)^l delta_{t+l}``.

    With ``lam = 1`` this is ``R_t - values_t`` exactly.
    """
    next_values = torch.cat([values[1:], torch.zeros_like(values[:1])]) * torch.cat(
        [mask[1:], torch.zeros_like(mask[:1])]
    )
    deltas = (rewards + gamma * next_values - values) * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = (deltas[t] + gamma * lam * running) * mask[t]
        advantages[t] = running
    return advantages


def discount_weights(horizon: int, gamma: float, dtype: torch.dtype = torch.float32,
                     device: torch.device | str = "cpu") -> Tensor:
    """``gamma^t`` for t = 0 .. horizon-1."""
    return gamma ** torch.arange(horizon, dtype=torch.float64).to(device=device, dtype=dtype)


class LinearFeatureBaseline:
    """Value estimate linear in ``[o, o^2, t, t^2, t^3, 1]`` (t = step / 100), as in rllab.

    Fitted by ridge regression on the returns of one batch, separately for every task (the
    leading axis of the per-task tensors). The ridge term starts at ``reg_coeff`` (``ridge="absolute"``,
    as rllab and pytorch-maml-rl fit it) or ``reg_coeff`` times the mean diagonal of the normal
    matrix (``"relative"``), and grows tenfold until the Cholesky factorisation succeeds, so
    rank-deficient or constant data never fail.
    """

    def __init__(self, reg_coeff: float = 1e-5, max_tries: int = 8, ridge: Ridge = "relative") -> None:
        if ridge not in RIDGES:
            raise ValueError(f"baseline ridge {ridge!r} is unknown; allowed: {', '.join(RIDGES)}")
        self.reg_coeff, self.max_tries, self.ridge = reg_coeff, max_tries, ridge

    @staticmethod
    def features(observations: Tensor, mask: Tensor) -> Tensor:
        """Features of shape (T, ..., 2 * obs_dim + 4); zero on padded steps."""
        T = observations.shape[0]
        t = (torch.arange(T, dtype=observations.dtype,
                          device=observations.device) / 100.0).view(T, *([1] * (mask.dim() - 1)), 1)
        t = t.expand(*mask.shape, 1)
        obs = observations.clamp(-10, 10)
        feats = torch.cat([obs, obs**2, t, t**2, t**3, torch.ones_like(t)], dim=-1)
        return feats * mask.unsqueeze(-1)

    def fit_predict(self, observations: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
        """Fit one linear model per task and return its predictions for the same steps.

        Args:
            observations: (T, B, M, obs_dim) with B tasks and M episodes each.
            returns: (T, B, M) regression targets.
            mask: (T, B, M).
        Returns:
            (T, B, M) fitted values, zero on padded steps.
        """
        feats = self.features(observations, mask).to(torch.float64)
        T, B, M, F = feats.shape
        X = feats.permute(1, 0, 2, 3).reshape(B, T * M, F)
        y = (returns * mask).to(torch.float64).permute(1, 0, 2).reshape(B, T * M, 1)
        gram = X.transpose(1, 2) @ X
        rhs = X.transpose(1, 2) @ y
        weights = self._ridge_solve(gram, rhs)
        values = (X @ weights).view(B, T, M).permute(1, 0, 2)
        return values.to(returns.dtype) * mask

    def _ridge_solve(self, gram: Tensor, rhs: Tensor) -> Tensor:
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        scale = 1.0
        if self.ridge == "relative":
            scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-8).view(-1, 1, 1)
        reg = self.reg_coeff
        for _ in range(self.max_tries):
            chol, info = torch.linalg.cholesky_ex(gram + reg * scale * eye)
            if bool((info == 0).all()):
                weights = torch.cholesky_solve(rhs, chol)
                if bool(torch.isfinite(weights).all()):
                    return weights
            reg *= 10
        # Non-finite data: no baseline rather than a crash; callers see the NaN elsewhere.
        return torch.zeros_like(rhs)
