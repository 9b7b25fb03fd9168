"""Policy-gradient surrogate objectives (ascent form: maximise).

Notation: per-step log-probability ``l_t = log pi_theta(a_t|s_t)``, behaviour parameters
``theta_b`` (the parameters the batch was sampled with, their log-probabilities stored as
``old_log_probs``), ``c_t = sum_{t'<=t} (l_t' - l_t'^b)``.

Discounting convention: the gradient of the discounted return weights the score at step t by
``gamma^t``, so every surrogate here does too. ``Psi_t = gamma^t * A_t``, with ``A_t`` the
(GAE) advantage; with GAE lambda = 1, ``A_t = R_t - b(s_t)`` and ``reinforce``, ``lvc`` and
``dice`` have the same gradient at ``theta = theta_b``. The oracle can drop the ``gamma^t`` of
``reinforce`` and ``lvc`` (``discount_scores=False``, ``Psi_t = A_t``), as Finn et al.'s code does.

Every surrogate is an average over the episodes of a task, summed over tasks, so that with
task-batched parameters its gradient w.r.t. task i's parameters is task i's estimate. A batch
may carry a positive constant per task (``scale``) that multiplies that task's surrogate: with
``1 / (mean episode length * std of A)`` the surrogate is in the units of Finn et al.'s code (a
mean over steps with standardised advantages, where the inner step is 0.1). A constant factor
leaves every estimator's properties intact: gradient and Hessian are scaled by it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from metarl.rl.sampling import Episodes


@dataclass(frozen=True)
class PolicyGradientBatch:
    """Episodes plus what the surrogates need, all (T, B, M)."""

    episodes: Episodes
    old_log_probs: Tensor  # l_t at the behaviour parameters
    advantages: Tensor  # Psi_t = gamma^t * A_t, or A_t without discount_scores (optionally normalised per task)
    values: Tensor  # baseline b(s_t)
    discounts: Tensor  # gamma^t, shape (T, 1, 1)
    scale: Tensor | None = None  # (B,) positive constant per task multiplying its surrogate; None: 1


def _per_task_mean(per_step: Tensor, batch: PolicyGradientBatch) -> Tensor:
    """Sum over time, mean over episodes, times the task's scale, sum over tasks."""
    if batch.scale is None:
        return (per_step * batch.episodes.mask).sum() / batch.episodes.episodes_per_task
    per_task = (per_step * batch.episodes.mask).sum((0, 2))
    return (per_task * batch.scale).sum() / batch.episodes.episodes_per_task


def reinforce(log_probs: Tensor, batch: PolicyGradientBatch) -> Tensor:
    """``sum_t l_t Psi_t``: the policy gradient at theta_b; its Hessian misses the
    score-outer-product terms (biased second-order information)."""
    return _per_task_mean(log_probs * batch.advantages, batch)


def lvc(log_probs: Tensor, batch: PolicyGradientBatch) -> Tensor:
    """``sum_t exp(l_t - l_t^b) Psi_t``: low-variance curvature (ProMP), biased Hessian."""
    log_ratio = (log_probs - batch.old_log_probs) * batch.episodes.mask
    return _per_task_mean(torch.exp(log_ratio) * batch.advantages, batch)


def dice(log_probs: Tensor, batch: PolicyGradientBatch) -> Tensor:
    """DiCE with its baseline term: unbiased gradient and Hessian at theta_b; elsewhere the
    per-decision importance-sampled estimate of J.

    ``sum_t gamma^t r_t exp(c_t) + sum_t gamma^t b_t (1 - exp(l_t - l_t^b)) exp(c_{t-1})``.
    """
    mask = batch.episodes.mask
    log_ratio = (log_probs - batch.old_log_probs) * mask
    cumulative = torch.cumsum(log_ratio, dim=0)
    previous = cumulative - log_ratio
    rewards = batch.discounts * batch.episodes.rewards * torch.exp(cumulative)
    baseline = batch.discounts * batch.values * (1 - torch.exp(log_ratio)) * torch.exp(previous)
    return _per_task_mean(rewards + baseline, batch)


Surrogate = Callable[[Tensor, PolicyGradientBatch], Tensor]
SURROGATES: dict[str, Surrogate] = {"reinforce": reinforce, "dice": dice, "lvc": lvc}
