"""The padded batch of episodes every sampler returns."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Episodes:
    """A padded batch of episodes, time-major: every tensor is (T, tasks, episodes, ...).

    ``mask[t, i, e]`` is 1.0 where episode ``e`` of task ``i`` was still running at step ``t``
    and 0.0 after it ended; padded entries of the other tensors are zero. An episode whose mask is
    zero throughout is absent (a collection dropped it, see :mod:`metarl.rl.sampling.step_budget`):
    every mean over episodes leaves it out.
    """

    observations: Tensor  # (T, B, M, obs_dim)
    actions: Tensor  # (T, B, M, action_dim) float, or (T, B, M) integer
    rewards: Tensor  # (T, B, M)
    mask: Tensor  # (T, B, M)
    log_probs: Tensor  # (T, B, M) log pi(a_t|s_t) under the sampling parameters

    @property
    def horizon(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[1]

    @property
    def episodes_per_task(self) -> int:
        return self.rewards.shape[2]

    @property
    def num_steps(self) -> int:
        """Environment steps actually taken (the number of unmasked entries)."""
        return int(self.mask.sum().item())

    def episode_returns(self) -> Tensor:
        """Undiscounted return of every episode, shape (B, M)."""
        return (self.rewards * self.mask).sum(0)

    def episode_counts(self) -> Tensor:
        """Episodes present in every task, shape (B,) (every episode has a first step)."""
        return self.mask[0].sum(1)

    def task_mean_returns(self) -> Tensor:
        """Mean undiscounted return over each task's episodes, shape (B,)."""
        return self.episode_returns().sum(1) / self.episode_counts().clamp_min(1)

    def mean_return(self) -> float:
        """Mean undiscounted episode return over all tasks and episodes."""
        return float(self.episode_returns().sum() / self.episode_counts().sum().clamp_min(1))

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Episodes:
        """The same episodes on ``device``, with floating-point tensors cast to ``dtype``."""
        cast = {f.name: getattr(self, f.name) for f in fields(self)}
        cast = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in cast.items()}
        return replace(self, **cast)

    def numpy(self) -> dict[str, np.ndarray]:
        """The tensors as NumPy arrays by field name (what worker processes send back)."""
        return {f.name: getattr(self, f.name).numpy() for f in fields(self)}

    @classmethod
    def from_numpy(cls, arrays: dict[str, np.ndarray]) -> Episodes:
        """The inverse of :meth:`numpy` (the arrays are shared, not copied)."""
        return cls(**{name: torch.from_numpy(array) for name, array in arrays.items()})
