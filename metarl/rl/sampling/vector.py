"""The in-process sampler: every episode of a call in one vectorised loop.

:class:`VectorSampler` steps all (task, episode) copies of a meta-batch with one batched
environment and one policy call per time step, whatever the number of tasks (or, for families
that prefer smaller batched envs, such as the MuJoCo ones, one per chunk of whole tasks, rolled out
one after the other): with task-batched parameters (one set per task after adaptation) the policy
call is vectorised over tasks.
Randomness is keyed per episode (see :mod:`metarl.rl.sampling.rollout`), so the same key gives the
same episodes whatever else is sampled, and in whatever order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from envs import Task, TaskFamily
from metarl.params import Params
from metarl.rl.policies import Policy
from metarl.rl.sampling.base import Sampler
from metarl.rl.sampling.episodes import Episodes
from metarl.rl.sampling.rollout import PairRange, rollout


class VectorSampler(Sampler):
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
        pairs = PairRange(0, len(tasks) * self.episodes_per_task, self.episodes_per_task)
        return rollout(self.family, self.policy, tasks, params, seed=self.seed, key=key, pairs=pairs, dtype=self.dtype)
