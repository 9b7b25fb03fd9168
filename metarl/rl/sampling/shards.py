"""A sampler call cut into shards for workers, the worker's side, and the episodes put back together.

The B x M (task, episode) pairs of a call are split into contiguous ranges of near-equal size, one
per worker (a range may start or end inside a task). A worker, set up once from a
:class:`WorkerSpec`, rolls out its range with :func:`metarl.rl.sampling.rollout.rollout` and sends
back NumPy arrays; :func:`merge_shards` puts them in place. Every episode depends only on its own
pair, so the merged batch equals the in-process sampler's, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from envs import Task, TaskFamily
from metarl.params import Params
from metarl.rl.policies import Policy
from metarl.rl.sampling.episodes import Episodes
from metarl.rl.sampling.rollout import PairRange, rollout


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to sample: ``build()`` returns the task family and the policy.

    ``build`` is called once in every worker, at start-up, so it travels to the worker by pickling:
    a module-level function or a ``functools.partial`` of one (the configured back-ends use
    ``functools.partial(metarl.experiment.build.build_family_and_policy, config)``).
    """

    build: Callable[[], tuple[TaskFamily, Policy]]
    episodes_per_task: int
    seed: int = 0
    dtype: torch.dtype = torch.float32


@dataclass(frozen=True)
class ShardJob:
    """One worker's share of a call: the pairs, their tasks, their parameters and the call's key."""

    pairs: PairRange
    tasks: list[Task]  # the tasks pairs.first_task .. pairs.end_task - 1
    params: dict[str, np.ndarray]  # shared, or one set per task of ``tasks``
    key: tuple[int, ...]

    def describe(self) -> str:
        """Which part of the call this is, for messages."""
        first, last = self.pairs.first_task, self.pairs.end_task - 1
        return f"task {first}" if first == last else f"tasks {first}-{last}"


def split_pairs(num_tasks: int, episodes_per_task: int, parts: int) -> list[PairRange]:
    """At most ``parts`` contiguous ranges covering all pairs, sizes differing by at most one, none empty."""
    total = num_tasks * episodes_per_task
    sizes = [total // parts + (1 if k < total % parts else 0) for k in range(parts)]
    bounds = np.cumsum([0, *sizes])
    return [PairRange(int(start), int(stop), episodes_per_task)
            for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]


def make_jobs(tasks: Sequence[Task], params: Params, key: Sequence[int], episodes_per_task: int, parts: int,
              task_batched: bool) -> list[ShardJob]:
    """The call cut into at most ``parts`` jobs; a job carries only its own tasks' parameters."""
    arrays = {k: v.detach().cpu().numpy() for k, v in params.items()}
    jobs = []
    for pairs in split_pairs(len(tasks), episodes_per_task, parts):
        first, end = pairs.first_task, pairs.end_task
        shard_params = {k: v[first:end] for k, v in arrays.items()} if task_batched else arrays
        jobs.append(ShardJob(pairs, list(tasks[first:end]), shard_params, tuple(key)))
    return jobs


class ShardRunner:
    """The worker's side: builds the family and the policy once, then rolls out jobs on one torch thread."""

    def __init__(self, spec: WorkerSpec) -> None:
        torch.set_num_threads(1)
        self.spec = spec
        self.family, self.policy = spec.build()

    def run(self, job: ShardJob) -> dict[str, np.ndarray]:
        """The job's episodes as NumPy arrays (see :meth:`Episodes.numpy`)."""
        params = {k: torch.tensor(v) for k, v in job.params.items()}  # a copy: Ray's arrays are read-only
        episodes = rollout(self.family, self.policy, job.tasks, params, seed=self.spec.seed, key=job.key,
                           pairs=job.pairs, dtype=self.spec.dtype)
        return episodes.numpy()


def merge_shards(shards: Sequence[tuple[PairRange, dict[str, np.ndarray]]], num_tasks: int) -> Episodes:
    """The episodes of a whole call from its shards' arrays (padded to the longest episode)."""
    horizon = max(arrays["rewards"].shape[0] for _, arrays in shards)
    M = shards[0][0].episodes_per_task
    merged = {name: np.zeros((horizon, num_tasks, M, *array.shape[3:]), dtype=array.dtype)
              for name, array in shards[0][1].items()}
    for pairs, arrays in shards:
        present = pairs.present()
        for name, array in arrays.items():
            merged[name][:array.shape[0], pairs.first_task:pairs.end_task][:, present] = array[:, present]
    return Episodes.from_numpy(merged)
