"""Rollout collection: the episodes of every task of a meta-batch in one loop over time.

The in-process :class:`VectorSampler` steps all (task, episode) copies of a meta-batch with
one batched environment and one policy call per time step, whatever the number of tasks:
with task-batched parameters (one set per task after adaptation) the policy call is
vectorised over tasks. Randomness is keyed per episode: episode ``e`` of task ``i`` in the
draw identified by ``key`` uses its own generator seeded by ``(seed, *key, i, e)``, so the
same key gives the same episodes whatever else is sampled, and in whatever order.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from envs import Task, TaskFamily
from metarl.policies import Params, Policy


@dataclass(frozen=True)
class Episodes:
    """A padded batch of episodes, time-major: every tensor is (T, tasks, episodes, ...).

    ``mask[t, i, e]`` is 1.0 where episode ``e`` of task ``i`` was still running at step ``t``
    and 0.0 after it ended; padded entries of the other tensors are zero.
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

    def mean_return(self) -> float:
        """Mean undiscounted episode return over all tasks and episodes."""
        return float(self.episode_returns().mean())

    def to(self, dtype: torch.dtype) -> "Episodes":
        """The same episodes with floating-point tensors cast to ``dtype``."""
        cast = {f.name: getattr(self, f.name) for f in fields(self)}
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in cast.items()}
        return replace(self, **cast)


def episode_generators(seed: int, key: Sequence[int], num_tasks: int, episodes: int) -> list[np.random.Generator]:
    """One independent generator per (task, episode) of the draw ``key``, task-major."""
    return [
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(*key, i, e)))
        for i in range(num_tasks)
        for e in range(episodes)
    ]


class VectorSampler:
    """In-process sampler: all (task, episode) copies stepped together by a batched env.

    Args:
        family: the task family whose ``make_batched`` builds the environments.
        policy: the policy (its module only; parameters come with each call).
        episodes_per_task: episodes drawn for every task of a call.
        seed: the run's seed; every draw is keyed by it and the call's ``key``.
        dtype: floating-point type of the returned tensors.
    """

    def __init__(
        self,
        family: TaskFamily,
        policy: Policy,
        episodes_per_task: int,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.family, self.policy = family, policy
        self.episodes_per_task, self.seed, self.dtype = episodes_per_task, seed, dtype

    def sample(self, tasks: Sequence[Task], params: Params, key: Sequence[int]) -> Episodes:
        """Roll out ``episodes_per_task`` episodes of every task.

        Args:
            tasks: the B tasks.
            params: one parameter set for all tasks, or a task-batched set (leading axis B).
            key: integers identifying this draw (for example iteration, phase, step); the
                same key and seed always give the same episodes.
        """
        B, M = len(tasks), self.episodes_per_task
        env = self.family.make_batched([task for task in tasks for _ in range(M)])
        horizon = env.horizon
        rngs = episode_generators(self.seed, key, B, M)
        reset_seeds = np.array([rng.integers(2**31) for rng in rngs], dtype=np.int64)
        noise = np.stack([self.policy.draw_noise(rng, horizon) for rng in rngs], axis=1)
        noise = torch.from_numpy(noise).to(self.dtype).view(horizon, B, M, *noise.shape[2:])
        batched = self.policy.is_task_batched(params)
        params = {k: v.detach().to(self.dtype) for k, v in params.items()}

        obs = env.reset(reset_seeds)
        obs_buf = torch.zeros((horizon, B, M, obs.shape[-1]), dtype=self.dtype)
        act_buf: Tensor | None = None
        rew_buf = torch.zeros((horizon, B, M), dtype=torch.float64)
        mask_buf = torch.zeros((horizon, B, M), dtype=self.dtype)
        logp_buf = torch.zeros((horizon, B, M), dtype=self.dtype)
        alive = np.ones(B * M, dtype=bool)
        for t in range(horizon):
            obs_t = torch.as_tensor(obs, dtype=self.dtype).view(B, M, -1)
            with torch.no_grad():
                # Shared params need no task axis: one call over all B x M copies.
                actions, log_probs = self.policy.act(
                    params, obs_t if batched else obs_t.view(B * M, -1),
                    noise[t] if batched else noise[t].reshape(B * M, *noise.shape[3:]),
                )
            actions = actions.reshape(B, M, *actions.shape[(2 if batched else 1):])
            if act_buf is None:
                act_buf = torch.zeros((horizon, *actions.shape), dtype=actions.dtype)
            alive_t = torch.from_numpy(alive).view(B, M)
            obs_buf[t], act_buf[t], mask_buf[t] = obs_t, actions, alive_t.to(self.dtype)
            logp_buf[t] = log_probs.view(B, M)
            obs, reward, terminated, truncated = env.step(actions.reshape(B * M, *actions.shape[2:]).numpy())
            rew_buf[t] = torch.from_numpy(np.where(alive, reward, 0.0)).view(B, M)
            alive &= ~(np.asarray(terminated) | np.asarray(truncated))
            if not alive.any():
                break
        assert act_buf is not None
        keep = mask_buf.sum((1, 2)) > 0
        obs_buf, act_buf, rew_buf, mask_buf, logp_buf = (
            buf[keep] for buf in (obs_buf, act_buf, rew_buf, mask_buf, logp_buf)
        )
        obs_buf = obs_buf * mask_buf.unsqueeze(-1)
        act_buf = act_buf * (mask_buf.unsqueeze(-1) if act_buf.dim() == 4 else mask_buf.long())
        return Episodes(obs_buf, act_buf, rew_buf.to(self.dtype), mask_buf, logp_buf * mask_buf)
